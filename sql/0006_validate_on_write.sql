-- Content rules move from CHECK constraints to a trigger. PostgreSQL re-evaluates every
-- CHECK on every UPDATE of a row, and the daemon updates each message at least twice
-- (claim, record): the address regexes cost more than the rest of the claim path.
-- The trigger runs on INSERT and on updates of content columns only, and raises the same
-- error class (check_violation) with the same constraint name as before.

ALTER TABLE mailroom.outbox
    DROP CONSTRAINT outbox_recipients_between_1_and_50,
    DROP CONSTRAINT outbox_addresses_must_be_ascii_user_at_domain,
    DROP CONSTRAINT outbox_exactly_one_of_template_subject_raw_mime,
    DROP CONSTRAINT outbox_template_name_is_ses_name,
    DROP CONSTRAINT outbox_template_data_is_object_for_templates_only,
    DROP CONSTRAINT outbox_template_data_at_most_256_kib,
    DROP CONSTRAINT outbox_simple_message_needs_subject_and_body,
    DROP CONSTRAINT outbox_body_only_with_subject,
    DROP CONSTRAINT outbox_message_at_most_40_mib,
    DROP CONSTRAINT outbox_idempotency_key_1_to_255_chars,
    DROP CONSTRAINT outbox_queue_name_not_empty;

CREATE FUNCTION mailroom.outbox_validate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    broken text;
BEGIN
    IF num_nulls(NEW.queue, NEW.status, NEW.priority, NEW.to_addresses, NEW.cc_addresses,
                 NEW.bcc_addresses, NEW.reply_to_addresses, NEW.not_before, NEW.attempts,
                 NEW.max_attempts, NEW.created_at, NEW.updated_at) > 0 THEN
        RETURN NEW;  -- a NOT NULL constraint, checked after this trigger, names the column
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

-- Not template_data: the daemon only ever removes its "$sign" block from it.
CREATE TRIGGER outbox_validate
    BEFORE INSERT OR UPDATE OF queue, from_address, to_addresses, cc_addresses, bcc_addresses,
        reply_to_addresses, template, subject, body_text, body_html, raw_mime, idempotency_key
    ON mailroom.outbox
    FOR EACH ROW EXECUTE FUNCTION mailroom.outbox_validate();
