-- Each application sees and changes only its own accounts and tokens (issue 18, item 2).
--
-- Every application's login role is a member of the one mailroom_app group, which holds
-- SELECT, INSERT and UPDATE on both tables: a second application read the first's token
-- secrets and codes, activated its accounts, changed an account's email and then received
-- its recovery mail, and inserted a token with a secret and an expiry of its own choosing.
--
-- 1. Row-level security by owner. An account belongs to the login role that created it
--    (accounts.owner, DEFAULT session_user: the identity outbox.enqueued_by, cancel() and
--    message_status() use); a token belongs to its account's owner (set by a trigger, not
--    by the inserter). A policy for every role but the table owner (superusers and
--    BYPASSRLS roles are not subject to it either) shows and lets change only the rows
--    whose owner is session_user, and refuses new rows in another's name. RLS rather than
--    a schema per application: the triggers, the enqueue path, the Python helpers and the
--    daemon stay one, and an application added later needs no migration.
--    The lifecycle triggers run as the caller (none is SECURITY DEFINER), so the policies
--    hold inside them too: account_provisioned inserts only a token of the caller's own
--    new account, token_created reads only the caller's account, token_consumed activates
--    only an account the caller can update - its own.
-- 2. The owner is fixed once set, for the schema owner too (like enqueued_by, 0016); a row
--    with no owner (one that existed before this migration and whose owner could not be
--    derived) is visible to no application until the schema owner assigns it with
--    mailroom.assign_account_owner(ids, role).
-- 3. Applications cannot choose a token's secret, code, created_at, expires_at or
--    consumed_at: they may INSERT only (account_id, action) and UPDATE only consumed_at
--    (grants_1004, re-applied by every migrate after grants_0008's table-wide grant), and
--    a consumed token cannot be made unconsumed (replayable) again.
-- 4. Logins and addresses are unique per application, not across them: a global UNIQUE
--    told one application which addresses another had users for, and let it squat an
--    address so that the other could not provision its user.
--
-- Upgrade: an account's owner is derived from the outbox message its first activation
-- token enqueued (the token's trigger enqueues it in the same transaction, so the message
-- has the token's idempotency key and created_at, and its enqueued_by is the login role
-- that provisioned the account). Anything less certain - no activation token, the message
-- already pruned, enqueued before 0008, or two candidates - is left without an owner for
-- the schema owner to assign.

ALTER TABLE mailroom.accounts ADD COLUMN owner pg_catalog.name;
ALTER TABLE mailroom.tokens ADD COLUMN owner pg_catalog.name;
-- set after ADD COLUMN, so that existing rows are not given the migrating role
ALTER TABLE mailroom.accounts ALTER COLUMN owner SET DEFAULT session_user;

UPDATE mailroom.accounts AS a
SET owner = derived.owner
FROM (
    SELECT t.account_id, pg_catalog.min(o.enqueued_by)::pg_catalog.name AS owner
    FROM mailroom.tokens AS t
    JOIN mailroom.outbox AS o
      ON o.idempotency_key OPERATOR(pg_catalog.=) ('mailroom-token:' OPERATOR(pg_catalog.||) t.id)
     AND o.created_at OPERATOR(pg_catalog.=) t.created_at
    WHERE t.action OPERATOR(pg_catalog.=) 'activation'::mailroom.token_action
      AND t.id OPERATOR(pg_catalog.=) (
          SELECT pg_catalog.min(f.id) FROM mailroom.tokens AS f
          WHERE f.account_id OPERATOR(pg_catalog.=) t.account_id
            AND f.action OPERATOR(pg_catalog.=) 'activation'::mailroom.token_action)
      AND o.enqueued_by IS NOT NULL
    GROUP BY t.account_id
    HAVING pg_catalog.count(DISTINCT o.enqueued_by) OPERATOR(pg_catalog.=) 1
) AS derived
WHERE a.id OPERATOR(pg_catalog.=) derived.account_id;

UPDATE mailroom.tokens AS t
SET owner = a.owner
FROM mailroom.accounts AS a
WHERE a.id OPERATOR(pg_catalog.=) t.account_id AND a.owner IS NOT NULL;

ALTER TABLE mailroom.accounts DROP CONSTRAINT accounts_login_key;
ALTER TABLE mailroom.accounts DROP CONSTRAINT accounts_email_key;
ALTER TABLE mailroom.accounts
    ADD CONSTRAINT accounts_login_per_owner UNIQUE (owner, login),
    ADD CONSTRAINT accounts_email_per_owner UNIQUE (owner, email);
-- rows without an owner stay unique among themselves, as they were (NULLS NOT DISTINCT
-- needs PostgreSQL 15; mailroom supports 14)
CREATE UNIQUE INDEX accounts_unowned_login ON mailroom.accounts (login) WHERE owner IS NULL;
CREATE UNIQUE INDEX accounts_unowned_email ON mailroom.accounts (email) WHERE owner IS NULL;
CREATE INDEX tokens_by_owner ON mailroom.tokens (owner);

-- An owner, once set, is a fact (accounts and tokens alike); NULL -> a role is the schema
-- owner's assignment of a row from before 1004.
CREATE FUNCTION mailroom.lifecycle_owner_fixed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.owner IS NOT NULL AND NEW.owner IS DISTINCT FROM OLD.owner THEN
        RAISE EXCEPTION 'mailroom.%: the owner of a row is fixed (id %)', TG_TABLE_NAME, OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER account_owner_fixed BEFORE UPDATE OF owner ON mailroom.accounts
    FOR EACH ROW EXECUTE FUNCTION mailroom.lifecycle_owner_fixed();

-- A token belongs to its account's owner, whoever inserts it and whatever it says. The
-- lookup runs as the caller, under the accounts policy: another application's account is
-- not found, so the same error answers "not yours" and "does not exist" (the foreign key,
-- checked later as the table owner, would tell them apart).
CREATE FUNCTION mailroom.token_owner() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' AND OLD.owner IS NOT NULL
       AND NEW.account_id OPERATOR(pg_catalog.=) OLD.account_id
       AND NEW.owner IS NOT DISTINCT FROM OLD.owner THEN
        RETURN NEW;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' AND OLD.owner IS NOT NULL THEN
        RAISE EXCEPTION 'mailroom.tokens: the account and owner of a token are fixed (id %)',
            OLD.id USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT a.owner INTO NEW.owner FROM mailroom.accounts AS a
    WHERE a.id OPERATOR(pg_catalog.=) NEW.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'mailroom.tokens: no account % of yours', NEW.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER token_owner BEFORE INSERT OR UPDATE OF owner, account_id ON mailroom.tokens
    FOR EACH ROW EXECUTE FUNCTION mailroom.token_owner();

-- A consumed token stays consumed: an application may update consumed_at, and setting it
-- back to NULL would make a used link work again.
CREATE FUNCTION mailroom.token_consumed_once() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.consumed_at IS NOT NULL AND NEW.consumed_at IS DISTINCT FROM OLD.consumed_at THEN
        RAISE EXCEPTION 'mailroom.tokens: token % is already consumed', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER token_consumed_once BEFORE UPDATE OF consumed_at ON mailroom.tokens
    FOR EACH ROW EXECUTE FUNCTION mailroom.token_consumed_once();

-- When the schema owner assigns an account from before 1004, its tokens follow.
CREATE FUNCTION mailroom.account_owner_assigned() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE mailroom.tokens AS t SET owner = NEW.owner
    WHERE t.account_id OPERATOR(pg_catalog.=) NEW.id AND t.owner IS NULL;
    RETURN NULL;
END
$$;

CREATE TRIGGER account_owner_assigned AFTER UPDATE OF owner ON mailroom.accounts
    FOR EACH ROW WHEN (OLD.owner IS NULL AND NEW.owner IS NOT NULL)
    EXECUTE FUNCTION mailroom.account_owner_assigned();

ALTER TABLE mailroom.accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE mailroom.tokens ENABLE ROW LEVEL SECURITY;
-- TO PUBLIC (the default): every role that is granted the tables is confined to its own
-- rows, and the policy does not depend on the mailroom_app role existing yet.
CREATE POLICY accounts_of_the_caller ON mailroom.accounts
    USING (owner OPERATOR(pg_catalog.=) session_user)
    WITH CHECK (owner OPERATOR(pg_catalog.=) session_user);
CREATE POLICY tokens_of_the_caller ON mailroom.tokens
    USING (owner OPERATOR(pg_catalog.=) session_user)
    WITH CHECK (owner OPERATOR(pg_catalog.=) session_user);

-- The schema owner's way to give accounts without an owner (from before 1004) to the
-- login role of the application they belong to; their tokens follow. Accounts that have
-- an owner are left alone. Returns how many were assigned. Not SECURITY DEFINER and not
-- granted: only the schema owner (who is not subject to the policies) can run it.
CREATE FUNCTION mailroom.assign_account_owner(account_ids bigint[], new_owner pg_catalog.name)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    assigned bigint;
BEGIN
    IF new_owner IS NULL OR NOT EXISTS (
        SELECT FROM pg_catalog.pg_roles AS r
        WHERE r.rolname OPERATOR(pg_catalog.=) new_owner AND r.rolcanlogin
    ) THEN
        RAISE EXCEPTION 'mailroom.assign_account_owner: % is not a login role',
            pg_catalog.quote_nullable(new_owner::pg_catalog.text)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH done AS (
        UPDATE mailroom.accounts AS a SET owner = new_owner
        WHERE a.id OPERATOR(pg_catalog.=) ANY (account_ids) AND a.owner IS NULL
        RETURNING 1
    )
    SELECT pg_catalog.count(*) INTO assigned FROM done;
    RETURN assigned;
END
$$;

CREATE FUNCTION mailroom.grants_1004() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_app') THEN
        -- grants_0008 gives the whole table every migrate; revoking that also drops the
        -- column grants, so they are granted again after it
        REVOKE INSERT, UPDATE ON mailroom.tokens FROM mailroom_app;
        GRANT INSERT (account_id, action), UPDATE (consumed_at) ON mailroom.tokens
            TO mailroom_app;
    END IF;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
