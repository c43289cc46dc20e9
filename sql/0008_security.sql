-- Security: every function gets search_path "pg_catalog, pg_temp"; an operator role;
-- idempotency keys scoped to the enqueuing login role and queue; a message in "sending"
-- always has a lease; stricter local parts of addresses.
--
-- Why pg_temp must be listed, and last: when a function's search_path does not name
-- pg_temp, PostgreSQL searches the session's temporary schema FIRST for relations and
-- types. enqueue() is SECURITY DEFINER, and the outbox triggers it fires run as the owner
-- too: a caller could create a temporary domain named "text" whose CHECK calls the caller's
-- own function, and have it run as the schema owner. Functions and operators are never
-- looked up in pg_temp, and with pg_catalog first no built-in type or function can be
-- shadowed. mailroom's own objects are always schema-qualified.

-- ---------------------------------------------------------------- search_path everywhere
ALTER FUNCTION mailroom.is_valid_address(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION mailroom.are_valid_addresses(text[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION mailroom.outbox_first_due() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION mailroom.outbox_notify() SET search_path = pg_catalog, pg_temp;
-- The dead-letter filter loses planner inlining with a SET clause; it is evaluated only for
-- dead rows (the callers keep `status = 'dead'` beside it for the outbox_dead index).
ALTER FUNCTION mailroom.dead_letter_matches(mailroom.outbox, bigint[], text, text, text,
                                            timestamptz, timestamptz)
    SET search_path = pg_catalog, pg_temp;

-- ---------------------------------------------------------------- addresses
-- RFC 5321 dot-string: atoms joined by single dots, so no leading, trailing or doubled dot
-- in the local part (at most 64 octets); the domain as before (ASCII, IDN in punycode).
CREATE OR REPLACE FUNCTION mailroom.is_valid_address(address text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN address IS NOT NULL
   AND octet_length(address) <= 320
   AND octet_length(split_part(address, '@', 1)) <= 64
   AND address ~ '^[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$';

-- ---------------------------------------------------------------- a lease for every send
-- A row in "sending" without a lease (an owner's hand-made INSERT or UPDATE) was never
-- reclaimed. Give existing ones an expired lease so that the next reaper retries them,
-- then make the state impossible.
UPDATE mailroom.outbox
SET locked_by = coalesce(locked_by, 'unknown (no lease)'),
    locked_until = coalesce(locked_until, now())
WHERE status = 'sending' AND (locked_by IS NULL OR locked_until IS NULL);

ALTER TABLE mailroom.outbox ADD CONSTRAINT outbox_sending_has_lease
    CHECK (status <> 'sending' OR (locked_by IS NOT NULL AND locked_until IS NOT NULL));

-- A final state for a message nobody wants sent any more (the application's cancel, an
-- operator's cancel): not a failure, so never among the dead letters that are retried.
ALTER TABLE mailroom.outbox DROP CONSTRAINT outbox_status_known;
ALTER TABLE mailroom.outbox ADD CONSTRAINT outbox_status_known
    CHECK (status IN ('pending', 'sending', 'sent', 'retrying', 'dead', 'cancelled'));

-- A try whose lease expired while its holder was still alive: the reaper logs
-- "lease_expired", then the holder records "sent". The record query turns that row into
-- the "sent" row (one try, one row); this small index finds it.
CREATE INDEX attempts_lease_expired ON mailroom.attempts (message_id, attempt)
    WHERE outcome = 'lease_expired';

-- ---------------------------------------------------------------- idempotency scope
-- A key belongs to the login role that enqueued (session_user: inside the SECURITY DEFINER
-- enqueue() current_user is the owner) and to the queue. One application cannot take,
-- nor learn the message id behind, another's key. Rows enqueued before this migration have
-- no owner (NULL) and match no later enqueue.
ALTER TABLE mailroom.outbox ADD COLUMN enqueued_by text;
ALTER TABLE mailroom.outbox ALTER COLUMN enqueued_by SET DEFAULT session_user;
ALTER TABLE mailroom.outbox DROP CONSTRAINT outbox_idempotency_key_key;
CREATE UNIQUE INDEX outbox_idempotency_key ON mailroom.outbox (enqueued_by, queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE OR REPLACE FUNCTION mailroom.enqueue(
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
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
    caller text := session_user;
BEGIN
    INSERT INTO mailroom.outbox AS o (
        queue, priority, from_address, to_addresses, cc_addresses, bcc_addresses,
        reply_to_addresses, config_set, template, template_data, subject, body_text,
        body_html, raw_mime, idempotency_key, not_before, max_attempts, enqueued_by
    ) VALUES (
        enqueue.queue, enqueue.priority, enqueue.from_address, enqueue.to_addresses,
        coalesce(enqueue.cc_addresses, '{}'), coalesce(enqueue.bcc_addresses, '{}'),
        coalesce(enqueue.reply_to_addresses, '{}'), enqueue.config_set, enqueue.template,
        enqueue.template_data, enqueue.subject, enqueue.body_text, enqueue.body_html,
        enqueue.raw_mime, enqueue.idempotency_key, coalesce(enqueue.not_before, now()),
        enqueue.max_attempts, caller
    )
    ON CONFLICT (enqueued_by, queue, idempotency_key) WHERE idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING o.id INTO new_id;

    IF new_id IS NULL THEN
        SELECT o.id INTO new_id FROM mailroom.outbox AS o
        WHERE o.enqueued_by = caller AND o.queue = enqueue.queue
          AND o.idempotency_key = enqueue.idempotency_key;
    END IF;
    RETURN new_id;
END
$$;

-- An application reads the status of the messages it enqueued, and of no other.
CREATE OR REPLACE FUNCTION mailroom.message_status(message_id bigint)
RETURNS TABLE (status text, attempts integer, created_at timestamptz, sent_at timestamptz,
               provider_message_id text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.status, o.attempts, o.created_at, o.sent_at, o.provider_message_id
    FROM mailroom.outbox AS o
    WHERE o.id = message_id AND o.enqueued_by = session_user
$$;

-- ---------------------------------------------------------------- roles and grants
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_operator') THEN
        CREATE ROLE mailroom_operator NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'mailroom: cannot create role mailroom_operator (%); '
        'create it (NOLOGIN) and run `mailroom migrate` again', SQLERRM;
END
$$;

-- Each migration that adds objects adds a mailroom.grants_NNNN() function; grant_roles()
-- (run by every `mailroom migrate`, so roles created later get their grants too) calls
-- them all in order. This one holds every grant up to and including 0008.
CREATE FUNCTION mailroom.grants_0008() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_app') THEN
        GRANT USAGE ON SCHEMA mailroom TO mailroom_app;
        GRANT EXECUTE ON FUNCTION
            mailroom.enqueue(text[], text, jsonb, text, text, text, bytea, text, text[], text[],
                             text[], text, smallint, timestamptz, text, integer, text),
            mailroom.message_status(bigint),
            mailroom.is_valid_address(text),
            mailroom.are_valid_addresses(text[])
        TO mailroom_app;
        IF pg_catalog.to_regclass('mailroom.tokens') IS NOT NULL THEN
            -- the web application's side of the lifecycle (mailroom.lifecycle)
            GRANT SELECT, INSERT, UPDATE ON mailroom.accounts, mailroom.tokens TO mailroom_app;
            GRANT EXECUTE ON FUNCTION mailroom.new_token_secret(), mailroom.new_token_code()
                TO mailroom_app;
        END IF;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_daemon') THEN
        GRANT USAGE ON SCHEMA mailroom TO mailroom_daemon;
        GRANT SELECT, UPDATE, DELETE ON mailroom.outbox TO mailroom_daemon;
        GRANT SELECT, INSERT, UPDATE, DELETE ON mailroom.attempts TO mailroom_daemon;
        GRANT SELECT ON mailroom.settings, mailroom.schema_migrations TO mailroom_daemon;
        GRANT SELECT, INSERT, UPDATE ON mailroom.rate_buckets TO mailroom_daemon;
        GRANT EXECUTE ON FUNCTION mailroom.is_valid_address(text),
            mailroom.are_valid_addresses(text[]),
            mailroom.reserve_rate(text, double precision, double precision, double precision)
            TO mailroom_daemon;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_operator') THEN
        -- the on-call commands: status, show, dead list | retry | purge, send-test
        GRANT USAGE ON SCHEMA mailroom TO mailroom_operator;
        GRANT SELECT, UPDATE, DELETE ON mailroom.outbox TO mailroom_operator;
        GRANT SELECT ON mailroom.attempts, mailroom.settings, mailroom.schema_migrations
            TO mailroom_operator;
        GRANT EXECUTE ON FUNCTION
            mailroom.enqueue(text[], text, jsonb, text, text, text, bytea, text, text[], text[],
                             text[], text, smallint, timestamptz, text, integer, text),
            mailroom.message_status(bigint),
            mailroom.is_valid_address(text),
            mailroom.are_valid_addresses(text[]),
            mailroom.dead_letter_matches(mailroom.outbox, bigint[], text, text, text,
                                         timestamptz, timestamptz)
        TO mailroom_operator;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION mailroom.grant_roles() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    grants regprocedure;
BEGIN
    FOR grants IN
        SELECT p.oid::regprocedure
        FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'mailroom'::regnamespace
          AND p.proname ~ '^grants_[0-9]{4}$' AND p.pronargs = 0
        ORDER BY p.proname
    LOOP
        EXECUTE pg_catalog.format('SELECT %s()', grants::regproc);
    END LOOP;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
