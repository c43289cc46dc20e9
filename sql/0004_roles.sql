-- Least privilege. Two group roles (NOLOGIN); grant them to your login roles:
--   mailroom_app     may enqueue (mailroom.enqueue) and read a message's status by id;
--                    it cannot read bodies or recipients, nor change any row.
--   mailroom_daemon  may claim, record and prune outbox rows; it owns nothing and so
--                    cannot alter the schema.
-- Nothing in the schema is granted to PUBLIC. Roles are cluster-wide: when the migrating
-- user may not create roles, create them yourself and run `mailroom migrate` again.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mailroom_app') THEN
        CREATE ROLE mailroom_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mailroom_daemon') THEN
        CREATE ROLE mailroom_daemon NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'mailroom: cannot create roles mailroom_app and mailroom_daemon (%); '
        'create them (NOLOGIN) and grant as in sql/0004_roles.sql', SQLERRM;
END
$$;

REVOKE ALL ON SCHEMA mailroom FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA mailroom FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA mailroom FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA mailroom REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- enqueue() runs with its owner's rights so that applications need no table privilege;
-- a fixed search_path (pg_temp last) keeps callers from shadowing anything it uses.
ALTER FUNCTION mailroom.enqueue(text[], text, jsonb, text, text, text, bytea, text, text[],
                                text[], text[], text, smallint, timestamptz, text, integer,
                                text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Status of one message, without its content or recipients.
CREATE FUNCTION mailroom.message_status(message_id bigint)
RETURNS TABLE (status text, attempts integer, created_at timestamptz, sent_at timestamptz,
               provider_message_id text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.status, o.attempts, o.created_at, o.sent_at, o.provider_message_id
    FROM mailroom.outbox AS o WHERE o.id = message_id
$$;
REVOKE EXECUTE ON FUNCTION mailroom.message_status(bigint) FROM PUBLIC;

-- Grants, re-applied by every `mailroom migrate` (roles created later get them too) and
-- covering the optional lifecycle tables when they exist.
CREATE FUNCTION mailroom.grant_roles() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'mailroom_app') THEN
        GRANT USAGE ON SCHEMA mailroom TO mailroom_app;
        GRANT EXECUTE ON FUNCTION
            mailroom.enqueue(text[], text, jsonb, text, text, text, bytea, text, text[], text[],
                             text[], text, smallint, timestamptz, text, integer, text),
            mailroom.message_status(bigint),
            mailroom.is_valid_address(text),
            mailroom.are_valid_addresses(text[])
        TO mailroom_app;
        IF to_regclass('mailroom.tokens') IS NOT NULL THEN
            -- the web application's side of the lifecycle (mailroom.lifecycle)
            GRANT SELECT, INSERT, UPDATE ON mailroom.accounts, mailroom.tokens TO mailroom_app;
            GRANT EXECUTE ON FUNCTION mailroom.new_token_secret(), mailroom.new_token_code()
                TO mailroom_app;
        END IF;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'mailroom_daemon') THEN
        GRANT USAGE ON SCHEMA mailroom TO mailroom_daemon;
        GRANT SELECT, UPDATE, DELETE ON mailroom.outbox TO mailroom_daemon;
        GRANT SELECT, INSERT, DELETE ON mailroom.attempts TO mailroom_daemon;
        GRANT SELECT ON mailroom.settings, mailroom.schema_migrations TO mailroom_daemon;
        -- CHECK constraints call these when the daemon updates a row
        GRANT EXECUTE ON FUNCTION mailroom.is_valid_address(text),
            mailroom.are_valid_addresses(text[]) TO mailroom_daemon;
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION mailroom.grant_roles() FROM PUBLIC;
