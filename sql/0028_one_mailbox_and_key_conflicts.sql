-- 0028: applications (issue 23). Two refusals an application must see for what they are.
--
-- 1. One mailbox per address. "A <a@example.com>, B <b@example.com>" given as one
--    recipient was converted into '"A <a@example.com>, B" <b@example.com>' - one valid
--    mailbox, b@, whose display name swallowed a@ - and a@ never got the mail. An address
--    holding a comma or a semicolon, or more than one "<", outside double quotes is a list
--    of mailboxes (RFC 5322 address-list, group syntax): ses_address() leaves it as it is,
--    and the outbox refuses it with a rule of its own, outbox_address_is_one_mailbox, naming
--    the column. A quoted display name may still hold any of them ('"Smith, Ann" <a@x>').
--    mailroom/addresses.py has the same rule (tests/test_addresses.py compares the two).
--
-- 2. An idempotency key reused for other content. enqueue() returned the existing message
--    for any content under a key already used: a second, different mail under the same key
--    silently never existed. Now the same key with the same message (sender, recipients,
--    template and data, or subject and bodies, or raw MIME; addresses compared in the form
--    stored) still returns the existing id; with other content enqueue() raises
--    unique_violation (SQLSTATE 23505) naming the constraint outbox_idempotency_key_reused.
--    Options (priority, not_before, max_attempts, configuration set) are not content: a
--    retry that computes another not_before is the same message.

-- Whether an address text holds more than one mailbox: after removing quoted strings, a
-- comma, a semicolon, or a second "<".
CREATE FUNCTION mailroom.holds_several_mailboxes(address text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (SELECT pg_catalog.strpos(s.bare, ',') OPERATOR(pg_catalog.>) 0
               OR pg_catalog.strpos(s.bare, ';') OPERATOR(pg_catalog.>) 0
               OR pg_catalog.length(s.bare) OPERATOR(pg_catalog.-)
                  pg_catalog.length(pg_catalog.replace(s.bare, '<', '')) OPERATOR(pg_catalog.>) 1
        FROM (SELECT pg_catalog.regexp_replace(address, '"([^"\\]|\\.)*"', '', 'g')) AS s(bare));

-- ---------------------------------------------------------------- one mailbox per address
CREATE OR REPLACE FUNCTION mailroom.ses_address(address text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ws constant text := E' \t\n\r\x0b\x0c';
    trimmed text := pg_catalog.btrim(address, ws);
    parts text[];
    name text;
    spec text;
    domain text;
BEGIN
    IF mailroom.holds_several_mailboxes(trimmed) THEN
        RETURN trimmed;  -- "A <a@x>, B <b@x>": one recipient per element, refused
    END IF;
    parts := pg_catalog.regexp_match(trimmed, '^(.*)<([^<>]*)>$');
    IF parts IS NULL THEN
        name := NULL;
        spec := trimmed;
    ELSE
        name := pg_catalog.btrim(parts[1], ws);
        spec := pg_catalog.btrim(parts[2], ws);
        IF pg_catalog.length(name) >= 2 AND name LIKE '"%"' THEN
            name := pg_catalog.btrim(pg_catalog.regexp_replace(
                pg_catalog.substr(name, 2, pg_catalog.length(name) - 2), '\\(.)', '\1', 'g'), ws);
        END IF;
        IF name ~ '[\x01-\x1f\x7f]' THEN
            RETURN trimmed;  -- a line break in a header is an injection: refused
        END IF;
    END IF;
    IF pg_catalog.strpos(spec, '@') > 0 THEN
        domain := substring(spec FROM '@([^@]*)$');
        domain := mailroom.ascii_domain(domain);
        IF domain IS NOT NULL THEN
            spec := substring(spec FROM '^(.*)@[^@]*$') || '@' || domain;
        END IF;
    END IF;
    IF name IS NULL OR name = '' THEN
        RETURN spec;
    ELSIF name ~ '^=\?UTF-8\?B\?[A-Za-z0-9+/]+={0,2}\?=( =\?UTF-8\?B\?[A-Za-z0-9+/]+={0,2}\?=)*$' THEN
        RETURN name || ' <' || spec || '>';  -- already encoded words: converting twice is a no-op
    ELSIF name ~ '^[\x01-\x7f]*$' THEN
        RETURN '"' || pg_catalog.replace(pg_catalog.replace(name, '\', '\\'), '"', '\"')
               || '" <' || spec || '>';
    END IF;
    RETURN mailroom.encoded_words(normalize(name, NFC)) || ' <' || spec || '>';
END
$$;

CREATE OR REPLACE FUNCTION mailroom.outbox_validate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    broken text;
    listed text;
BEGIN
    IF num_nulls(NEW.queue, NEW.status, NEW.priority, NEW.to_addresses, NEW.cc_addresses,
                 NEW.bcc_addresses, NEW.reply_to_addresses, NEW.not_before, NEW.attempts,
                 NEW.max_attempts, NEW.created_at, NEW.updated_at) > 0 THEN
        RETURN NEW;  -- a NOT NULL constraint, checked after this trigger, names the column
    END IF;
    -- Several mailboxes in one element ("A <a@x>, B <b@x>"): refused by a rule of its own,
    -- naming the column, before the address rule (which would refuse it less clearly).
    listed := CASE
        -- the common case, plain addresses, costs one match over all of them
        WHEN pg_catalog.concat_ws(' ', NEW.from_address,
                                  pg_catalog.array_to_string(NEW.to_addresses, ' '),
                                  pg_catalog.array_to_string(NEW.cc_addresses, ' '),
                                  pg_catalog.array_to_string(NEW.bcc_addresses, ' '),
                                  pg_catalog.array_to_string(NEW.reply_to_addresses, ' '))
             !~ '[,;<]' THEN NULL
        WHEN mailroom.holds_several_mailboxes(NEW.from_address) THEN 'from_address'
        WHEN EXISTS (SELECT FROM pg_catalog.unnest(NEW.to_addresses) AS a
                     WHERE mailroom.holds_several_mailboxes(a)) THEN 'to_addresses'
        WHEN EXISTS (SELECT FROM pg_catalog.unnest(NEW.cc_addresses) AS a
                     WHERE mailroom.holds_several_mailboxes(a)) THEN 'cc_addresses'
        WHEN EXISTS (SELECT FROM pg_catalog.unnest(NEW.bcc_addresses) AS a
                     WHERE mailroom.holds_several_mailboxes(a)) THEN 'bcc_addresses'
        WHEN EXISTS (SELECT FROM pg_catalog.unnest(NEW.reply_to_addresses) AS a
                     WHERE mailroom.holds_several_mailboxes(a)) THEN 'reply_to_addresses'
    END;
    IF listed IS NOT NULL
       AND coalesce(cardinality(NEW.to_addresses) >= 1
                    AND cardinality(NEW.to_addresses) + cardinality(NEW.cc_addresses)
                        + cardinality(NEW.bcc_addresses) <= 50, true) THEN
        RAISE EXCEPTION 'new row for relation "outbox" violates check constraint "%"',
                'outbox_address_is_one_mailbox'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'outbox_address_is_one_mailbox',
                  SCHEMA = 'mailroom', TABLE = 'outbox', COLUMN = listed,
                  DETAIL = pg_catalog.format('an element of %s holds more than one address',
                                             listed),
                  HINT = 'give each recipient an element of its own';
    END IF;
    -- Each rule as the CHECK it replaces: only a false result breaks it (NULL passes).
    broken := CASE
        WHEN NOT coalesce(cardinality(NEW.to_addresses) >= 1
                          AND cardinality(NEW.to_addresses) + cardinality(NEW.cc_addresses)
                              + cardinality(NEW.bcc_addresses) <= 50, true)
            THEN 'outbox_recipients_between_1_and_50'
        WHEN NOT coalesce(mailroom.are_valid_addresses(NEW.to_addresses)
                          AND mailroom.are_valid_addresses(NEW.cc_addresses)
                          AND mailroom.are_valid_addresses(NEW.bcc_addresses)
                          AND mailroom.are_valid_addresses(NEW.reply_to_addresses)
                          AND (NEW.from_address IS NULL
                               OR mailroom.is_valid_address(NEW.from_address)), true)
            THEN 'outbox_addresses_must_be_ascii_user_at_domain'
        WHEN num_nonnulls(NEW.template, NEW.subject, NEW.raw_mime) <> 1
            THEN 'outbox_exactly_one_of_template_subject_raw_mime'
        WHEN NOT coalesce(NEW.template IS NULL OR NEW.template ~ '^[A-Za-z0-9_-]{1,64}$', true)
            THEN 'outbox_template_name_is_ses_name'
        WHEN NOT coalesce(CASE WHEN NEW.template IS NULL THEN NEW.template_data IS NULL
                               ELSE NEW.template_data IS NULL
                                    OR jsonb_typeof(NEW.template_data) = 'object' END, true)
            THEN 'outbox_template_data_is_object_for_templates_only'
        WHEN NOT coalesce(NEW.template_data IS NULL
                          OR octet_length(NEW.template_data::text) <= 262144, true)
            THEN 'outbox_template_data_at_most_256_kib'
        WHEN NOT coalesce(NEW.subject IS NULL
                          OR (length(NEW.subject) BETWEEN 1 AND 998
                              AND num_nonnulls(NEW.body_text, NEW.body_html) >= 1), true)
            THEN 'outbox_simple_message_needs_subject_and_body'
        WHEN NOT coalesce(NEW.subject IS NOT NULL
                          OR num_nonnulls(NEW.body_text, NEW.body_html) = 0, true)
            THEN 'outbox_body_only_with_subject'
        WHEN NOT coalesce(octet_length(NEW.raw_mime) <= 41943040
                          AND coalesce(octet_length(NEW.body_text), 0)
                              + coalesce(octet_length(NEW.body_html), 0) <= 41943040, true)
            THEN 'outbox_message_at_most_40_mib'
        WHEN NOT coalesce(length(NEW.idempotency_key) BETWEEN 1 AND 255, true)
            THEN 'outbox_idempotency_key_1_to_255_chars'
        WHEN NOT coalesce(length(NEW.queue) BETWEEN 1 AND 63, true)
            THEN 'outbox_queue_name_not_empty'
    END;
    IF broken IS NOT NULL THEN
        RAISE EXCEPTION 'new row for relation "outbox" violates check constraint "%"', broken
            USING ERRCODE = 'check_violation', CONSTRAINT = broken,
                  SCHEMA = 'mailroom', TABLE = 'outbox';
    END IF;
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------- idempotency conflicts

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
    same boolean;
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
        -- the key is taken (the insert was valid: the triggers ran before the conflict)
        SELECT o.id,
               o.from_address IS NOT DISTINCT FROM mailroom.ses_address(enqueue.from_address)
               AND o.to_addresses = mailroom.ses_addresses(enqueue.to_addresses)
               AND o.cc_addresses = mailroom.ses_addresses(coalesce(enqueue.cc_addresses, '{}'))
               AND o.bcc_addresses
                   = mailroom.ses_addresses(coalesce(enqueue.bcc_addresses, '{}'))
               AND o.reply_to_addresses
                   = mailroom.ses_addresses(coalesce(enqueue.reply_to_addresses, '{}'))
               AND o.template IS NOT DISTINCT FROM enqueue.template
               AND o.template_data IS NOT DISTINCT FROM enqueue.template_data
               AND o.subject IS NOT DISTINCT FROM enqueue.subject
               AND o.body_text IS NOT DISTINCT FROM enqueue.body_text
               AND o.body_html IS NOT DISTINCT FROM enqueue.body_html
               AND o.raw_mime IS NOT DISTINCT FROM enqueue.raw_mime
        INTO new_id, same
        FROM mailroom.outbox AS o
        WHERE o.enqueued_by = caller AND o.queue = enqueue.queue
          AND o.idempotency_key = enqueue.idempotency_key;
        IF NOT same THEN
            RAISE EXCEPTION 'mailroom: idempotency key "%" already names message % with other content',
                    enqueue.idempotency_key, new_id
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'outbox_idempotency_key_reused',
                      SCHEMA = 'mailroom', TABLE = 'outbox',
                      HINT = 'a key names one message: give a different message its own key';
        END IF;
    END IF;
    RETURN new_id;
END
$$;

REVOKE EXECUTE ON FUNCTION mailroom.holds_several_mailboxes(text) FROM PUBLIC;

-- whoever writes an outbox row runs the validation, and with it this function
CREATE FUNCTION mailroom.grants_0028() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    role text;
BEGIN
    FOREACH role IN ARRAY ARRAY['mailroom_app', 'mailroom_daemon', 'mailroom_operator'] LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) role) THEN
            EXECUTE pg_catalog.format(
                'GRANT EXECUTE ON FUNCTION mailroom.holds_several_mailboxes(text) TO %I', role);
        END IF;
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION mailroom.grants_0028() FROM PUBLIC;
