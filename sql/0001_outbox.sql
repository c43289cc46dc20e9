-- mailroom outbox: one row per email, an append-only attempt log, enqueue(), and the
-- statement-level NOTIFY that wakes the daemons.

CREATE SCHEMA IF NOT EXISTS mailroom;

-- One row of settings the triggers need (the NOTIFY channel); `mailroom migrate` keeps
-- it in step with MAILROOM_CHANNEL_NAME.
CREATE TABLE mailroom.settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    channel text NOT NULL DEFAULT 'token_insert'
        CONSTRAINT settings_channel_is_identifier CHECK (channel ~ '^[A-Za-z_][A-Za-z0-9_$]{0,62}$')
);
INSERT INTO mailroom.settings DEFAULT VALUES;

-- Shape of one address as SES takes it: ASCII local part and domain (IDN domains in
-- punycode), no display name, no spaces or angle brackets.
CREATE FUNCTION mailroom.is_valid_address(address text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog
RETURN address IS NOT NULL
   AND octet_length(address) <= 320
   AND address ~ '^[A-Za-z0-9!#$%&''*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$';

CREATE FUNCTION mailroom.are_valid_addresses(addresses text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog
RETURN addresses IS NOT NULL
   AND NOT EXISTS (
       SELECT FROM unnest(addresses) AS a(address) WHERE NOT mailroom.is_valid_address(a.address)
   );

CREATE TABLE mailroom.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL DEFAULT 'user_action_queue',
    status text NOT NULL DEFAULT 'pending',
    priority smallint NOT NULL DEFAULT 0,

    from_address text,
    to_addresses text[] NOT NULL,
    cc_addresses text[] NOT NULL DEFAULT '{}',
    bcc_addresses text[] NOT NULL DEFAULT '{}',
    reply_to_addresses text[] NOT NULL DEFAULT '{}',
    config_set text,

    -- exactly one kind of content: an SES stored template, a simple message, or raw MIME
    template text,
    template_data jsonb,
    subject text,
    body_text text,
    body_html text,
    raw_mime bytea,

    idempotency_key text UNIQUE,
    not_before timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 10,
    locked_by text,
    locked_until timestamptz,
    provider_message_id text,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,

    CONSTRAINT outbox_status_known
        CHECK (status IN ('pending', 'sending', 'sent', 'retrying', 'dead')),
    CONSTRAINT outbox_recipients_between_1_and_50
        CHECK (cardinality(to_addresses) >= 1
               AND cardinality(to_addresses) + cardinality(cc_addresses)
                   + cardinality(bcc_addresses) <= 50),
    CONSTRAINT outbox_addresses_must_be_ascii_user_at_domain
        CHECK (mailroom.are_valid_addresses(to_addresses)
               AND mailroom.are_valid_addresses(cc_addresses)
               AND mailroom.are_valid_addresses(bcc_addresses)
               AND mailroom.are_valid_addresses(reply_to_addresses)
               AND (from_address IS NULL OR mailroom.is_valid_address(from_address))),
    CONSTRAINT outbox_exactly_one_of_template_subject_raw_mime
        CHECK (num_nonnulls(template, subject, raw_mime) = 1),
    CONSTRAINT outbox_template_name_is_ses_name
        CHECK (template IS NULL OR template ~ '^[A-Za-z0-9_-]{1,64}$'),
    CONSTRAINT outbox_template_data_is_object_for_templates_only
        CHECK (CASE WHEN template IS NULL THEN template_data IS NULL
                    ELSE template_data IS NULL OR jsonb_typeof(template_data) = 'object' END),
    CONSTRAINT outbox_template_data_at_most_256_kib
        CHECK (template_data IS NULL OR octet_length(template_data::text) <= 262144),
    CONSTRAINT outbox_simple_message_needs_subject_and_body
        CHECK (subject IS NULL
               OR (length(subject) BETWEEN 1 AND 998 AND num_nonnulls(body_text, body_html) >= 1)),
    CONSTRAINT outbox_body_only_with_subject
        CHECK (subject IS NOT NULL OR num_nonnulls(body_text, body_html) = 0),
    CONSTRAINT outbox_message_at_most_40_mib
        CHECK (octet_length(raw_mime) <= 41943040
               AND coalesce(octet_length(body_text), 0) + coalesce(octet_length(body_html), 0)
                   <= 41943040),
    CONSTRAINT outbox_max_attempts_between_1_and_100
        CHECK (max_attempts BETWEEN 1 AND 100),
    CONSTRAINT outbox_idempotency_key_1_to_255_chars
        CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    CONSTRAINT outbox_queue_name_not_empty
        CHECK (length(queue) BETWEEN 1 AND 63)
);

COMMENT ON TABLE mailroom.outbox IS
    'Transactional email outbox: insert in the same transaction as the business change.';

-- Only due work is indexed, so claims stay fast however much history is kept.
CREATE INDEX outbox_due_by_priority ON mailroom.outbox (queue, priority DESC, next_attempt_at, id)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX outbox_due_by_time ON mailroom.outbox (queue, next_attempt_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX outbox_leases ON mailroom.outbox (queue, locked_until)
    WHERE status = 'sending';

-- A message is first due at not_before; a direct INSERT need not know next_attempt_at.
CREATE FUNCTION mailroom.outbox_first_due() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    NEW.next_attempt_at := NEW.not_before;
    RETURN NEW;
END
$$;

CREATE TRIGGER outbox_first_due BEFORE INSERT ON mailroom.outbox
    FOR EACH ROW EXECUTE FUNCTION mailroom.outbox_first_due();

-- One NOTIFY per statement and queue, payload = queue name: never rows (8000-byte limit),
-- and a 10,000-row INSERT wakes the daemons once.
CREATE FUNCTION mailroom.outbox_notify() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    ch text;
    q text;
BEGIN
    SELECT channel INTO ch FROM mailroom.settings;
    FOR q IN SELECT DISTINCT queue FROM new_rows LOOP
        PERFORM pg_notify(ch, q);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON mailroom.outbox
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mailroom.outbox_notify();

CREATE TABLE mailroom.attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id bigint NOT NULL REFERENCES mailroom.outbox (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    outcome text NOT NULL
        CONSTRAINT attempts_outcome_known
        CHECK (outcome IN ('sent', 'retry', 'dead', 'paused', 'lease_expired')),
    provider_message_id text,
    error text,
    worker text,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempts_by_message ON mailroom.attempts (message_id);

COMMENT ON TABLE mailroom.attempts IS 'Append-only log: one row per message per try.';

-- Enqueue an email; returns its id. With an idempotency key already used, nothing is
-- inserted and the existing message's id is returned.
CREATE FUNCTION mailroom.enqueue(
    to_addresses text[],
    template text DEFAULT NULL,
    template_data jsonb DEFAULT NULL,
    subject text DEFAULT NULL,
    body_text text DEFAULT NULL,
    body_html text DEFAULT NULL,
    raw_mime bytea DEFAULT NULL,
    from_address text DEFAULT NULL,
    cc_addresses text[] DEFAULT '{}',
    bcc_addresses text[] DEFAULT '{}',
    reply_to_addresses text[] DEFAULT '{}',
    config_set text DEFAULT NULL,
    priority smallint DEFAULT 0,
    not_before timestamptz DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    max_attempts integer DEFAULT 10,
    queue text DEFAULT 'user_action_queue'
) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO mailroom.outbox AS o (
        queue, priority, from_address, to_addresses, cc_addresses, bcc_addresses,
        reply_to_addresses, config_set, template, template_data, subject, body_text,
        body_html, raw_mime, idempotency_key, not_before, max_attempts
    ) VALUES (
        enqueue.queue, enqueue.priority, enqueue.from_address, enqueue.to_addresses,
        coalesce(enqueue.cc_addresses, '{}'), coalesce(enqueue.bcc_addresses, '{}'),
        coalesce(enqueue.reply_to_addresses, '{}'), enqueue.config_set, enqueue.template,
        enqueue.template_data, enqueue.subject, enqueue.body_text, enqueue.body_html,
        enqueue.raw_mime, enqueue.idempotency_key, coalesce(enqueue.not_before, now()),
        enqueue.max_attempts
    )
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING o.id INTO new_id;

    IF new_id IS NULL THEN
        SELECT o.id INTO new_id FROM mailroom.outbox AS o
        WHERE o.idempotency_key = enqueue.idempotency_key;
    END IF;
    RETURN new_id;
END
$$;
