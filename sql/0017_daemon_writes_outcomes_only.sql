-- The daemon writes outcomes, not messages (issue 18, finding 6). It held UPDATE on every
-- outbox column, so its role could add a Bcc, change a recipient or the content of a
-- pending message, and DELETE on attempts, so it could erase the history of a try.
--
-- Now it may update only the columns its claim, record and reaper write: the state, the
-- attempt count, the lease, the schedule, the outcome. The one content change it made -
-- dropping the raw token secret ("$sign") from template data once a message is sent,
-- dead or cancelled - is done by a trigger for every writer, so no role needs UPDATE on
-- template_data to keep secrets from outliving their message. Attempts stay append-only
-- for the daemon apart from the one row a late success turns from lease_expired into sent
-- (UPDATE); deleting a message still deletes its attempts through the foreign key (the
-- cascade runs as the table owner).

CREATE FUNCTION mailroom.outbox_forget_token() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.template_data := NEW.template_data - '$sign';
    RETURN NEW;
END
$$;

CREATE TRIGGER outbox_forget_token BEFORE UPDATE OF status ON mailroom.outbox
    FOR EACH ROW
    WHEN (NEW.status OPERATOR(pg_catalog.=) ANY (ARRAY['sent', 'dead', 'cancelled']::pg_catalog.text[])
          AND NEW.template_data OPERATOR(pg_catalog.?) '$sign')
    EXECUTE FUNCTION mailroom.outbox_forget_token();

CREATE FUNCTION mailroom.grants_0017() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_daemon') THEN
        -- earlier grants_NNNN gave the whole table; revoking that also drops column grants,
        -- so the columns are granted again after it, every migrate
        REVOKE UPDATE ON mailroom.outbox FROM mailroom_daemon;
        GRANT UPDATE (status, attempts, next_attempt_at, provider_message_id, last_error,
                      sent_at, locked_by, locked_until, updated_at)
            ON mailroom.outbox TO mailroom_daemon;
        REVOKE DELETE ON mailroom.attempts FROM mailroom_daemon;
    END IF;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
