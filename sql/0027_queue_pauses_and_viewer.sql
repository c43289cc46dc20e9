-- Pausing a queue by hand, and a read-only operator role (issue 22).
--
-- An operator pauses a queue (a bad template is going out, a customer's domain is
-- bouncing everything) with `mailroom queue pause NAME --note ...` or the console: one row
-- in mailroom.queue_pauses, which every daemon's claim checks (queries.sql, claim: NOT
-- EXISTS on this table), so no daemon of any version from this one on claims from the
-- queue within one poll. What was already claimed finishes. Resuming deletes the row; the
-- caller wakes the daemons (NOTIFY on the configured channel), as for send-now. Both are
-- SECURITY DEFINER functions that append their audit row ('pause' / 'resume', the queue
-- in the selection) in the same transaction, as 0020's actions do: mailroom_operator has
-- no DML on the table.
--
-- mailroom_viewer (NOLOGIN, like the others: grant it to the on-call logins that should
-- look but not act) reads what mailroom_operator reads and executes only the functions
-- that cannot change anything: no operator_* action, no enqueue.

CREATE TABLE mailroom.queue_pauses (
    queue text PRIMARY KEY
        CONSTRAINT queue_pauses_queue_name_1_to_63_chars
        CHECK (pg_catalog.char_length(queue) OPERATOR(pg_catalog.>=) 1
               AND pg_catalog.char_length(queue) OPERATOR(pg_catalog.<=) 63),
    paused_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- who paused it: the login (session_user inside the SECURITY DEFINER function is
    -- still the caller's login) and the name the client gives (informative, bounded)
    paused_by text NOT NULL DEFAULT pg_catalog."session_user"(),
    operator text NOT NULL,
    note text CONSTRAINT queue_pauses_note_at_most_500_chars
        CHECK (pg_catalog.char_length(note) OPERATOR(pg_catalog.<=) 500)
);

COMMENT ON TABLE mailroom.queue_pauses IS
    'Queues paused by an operator: no daemon claims from them (issue 22). '
    'Written only by operator_pause_queue / operator_resume_queue.';

ALTER TABLE mailroom.audit DROP CONSTRAINT audit_action_known;
ALTER TABLE mailroom.audit ADD CONSTRAINT audit_action_known
    CHECK (action OPERATOR(pg_catalog.=) ANY (ARRAY['cancel', 'send_now', 'dead_retry',
           'dead_purge', 'suppress', 'unsuppress', 'pause', 'resume']::pg_catalog.text[]));

CREATE FUNCTION mailroom.operator_check_queue(queue text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF queue IS NULL OR pg_catalog.char_length(queue) OPERATOR(pg_catalog.<) 1
       OR pg_catalog.char_length(queue) OPERATOR(pg_catalog.>) 63 THEN
        RAISE EXCEPTION 'mailroom: a queue name is 1 to 63 characters' USING ERRCODE = '22023';
    END IF;
END
$$;

-- Pause a queue; true if it was running (false: already paused, nothing changed, no
-- audit row). A queue with no messages yet may be paused: it stays paused until resumed.
CREATE FUNCTION mailroom.operator_pause_queue(
    queue text, note text, operator text, via text, action_id uuid
) RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    added boolean;
BEGIN
    PERFORM mailroom.operator_check_queue(queue);
    PERFORM mailroom.operator_check(action_id, operator, via, note, false);
    WITH inserted AS (
        INSERT INTO mailroom.queue_pauses (queue, operator, note)
        VALUES (queue, operator, note)
        ON CONFLICT ON CONSTRAINT queue_pauses_pkey DO NOTHING
        RETURNING 1
    )
    SELECT EXISTS (SELECT FROM inserted) INTO added;
    IF added THEN
        INSERT INTO mailroom.audit (action_id, operator, via, action, message_ids, reason,
                                    selection)
        VALUES (action_id, operator, via, 'pause', '{}', note,
                pg_catalog.jsonb_build_object('queue', queue));
    END IF;
    RETURN added;
END
$$;

-- Resume a paused queue; true if it was paused (false: it was not, nothing changed).
CREATE FUNCTION mailroom.operator_resume_queue(
    queue text, note text, operator text, via text, action_id uuid
) RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    removed boolean;
BEGIN
    PERFORM mailroom.operator_check_queue(queue);
    PERFORM mailroom.operator_check(action_id, operator, via, note, false);
    WITH deleted AS (
        DELETE FROM mailroom.queue_pauses AS p WHERE p.queue OPERATOR(pg_catalog.=) queue
        RETURNING 1
    )
    SELECT EXISTS (SELECT FROM deleted) INTO removed;
    IF removed THEN
        INSERT INTO mailroom.audit (action_id, operator, via, action, message_ids, reason,
                                    selection)
        VALUES (action_id, operator, via, 'resume', '{}', note,
                pg_catalog.jsonb_build_object('queue', queue));
    END IF;
    RETURN removed;
END
$$;

-- Unsuppress with a note (the console's *Remove…*, `suppression remove --note`): 0020's
-- operator_unsuppress, with the note kept as the audit row's reason. Lifting a bounce or
-- complaint suppression is the riskiest suppression change: it should say why.
CREATE FUNCTION mailroom.operator_unsuppress(
    addresses text[], operator text, via text, action_id uuid, note text
) RETURNS TABLE (unsuppressed text, was text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    done text[];
    reasons text[];
BEGIN
    PERFORM mailroom.operator_check_addresses(addresses);
    PERFORM mailroom.operator_check(action_id, operator, via, note, false);
    WITH removed AS (
        DELETE FROM mailroom.suppressions AS s
        WHERE s.address OPERATOR(pg_catalog.=) ANY (ARRAY(
            SELECT mailroom.normalize_address(a) FROM pg_catalog.unnest(addresses) AS a))
        RETURNING s.address, s.reason
    )
    SELECT pg_catalog.array_agg(r.address ORDER BY r.address),
           pg_catalog.array_agg(r.reason ORDER BY r.address)
    INTO done, reasons FROM removed AS r;
    IF done IS NOT NULL THEN
        INSERT INTO mailroom.audit (action_id, operator, via, action, message_ids, reason,
                                    selection)
        VALUES (action_id, operator, via, 'unsuppress', '{}', note,
                pg_catalog.jsonb_build_object('addresses', done, 'reasons', reasons));
    END IF;
    RETURN QUERY SELECT x.a, x.r
        FROM ROWS FROM (pg_catalog.unnest(done), pg_catalog.unnest(reasons)) AS x (a, r);
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles
                   WHERE rolname OPERATOR(pg_catalog.=) 'mailroom_viewer') THEN
        CREATE ROLE mailroom_viewer NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'mailroom: cannot create role mailroom_viewer (%); '
        'create it (NOLOGIN) and run `mailroom migrate` again', SQLERRM;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;

-- Run by every migrate (grant_roles takes the grants_NNNN functions in name order).
CREATE FUNCTION mailroom.grants_0027() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mailroom_daemon') THEN
        -- the claim's pause check (queries.sql, claim)
        GRANT SELECT ON mailroom.queue_pauses TO mailroom_daemon;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mailroom_operator') THEN
        GRANT SELECT ON mailroom.queue_pauses TO mailroom_operator;
        GRANT EXECUTE ON FUNCTION
            mailroom.operator_pause_queue(text, text, text, text, uuid),
            mailroom.operator_resume_queue(text, text, text, text, uuid),
            mailroom.operator_unsuppress(text[], text, text, uuid, text)
        TO mailroom_operator;
    END IF;
END
$$;

-- The viewer's grants, named to run LAST (after every grants_NNNN of this and later
-- migrations): it gets SELECT on each table and view mailroom_operator may read, and
-- EXECUTE on each function the operator may run that is not SECURITY DEFINER (such a
-- function runs with the caller's own rights, so it cannot write what the viewer may not)
-- plus message_status (a definer function that only reads). So what a later migration
-- grants the operator to read reaches the viewer in the same migrate.
CREATE FUNCTION mailroom.grants_9999() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    item record;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mailroom_viewer')
       AND EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mailroom_operator') THEN
        GRANT USAGE ON SCHEMA mailroom TO mailroom_viewer;
        FOR item IN
            SELECT c.oid::pg_catalog.regclass AS name
            FROM pg_catalog.pg_class AS c
            WHERE c.relnamespace OPERATOR(pg_catalog.=) 'mailroom'::pg_catalog.regnamespace
              AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'v', 'p']::"char"[])
              AND pg_catalog.has_table_privilege('mailroom_operator', c.oid, 'SELECT')
        LOOP
            EXECUTE pg_catalog.format('GRANT SELECT ON %s TO mailroom_viewer', item.name);
        END LOOP;
        FOR item IN
            SELECT p.oid::pg_catalog.regprocedure AS name
            FROM pg_catalog.pg_proc AS p
            WHERE p.pronamespace OPERATOR(pg_catalog.=) 'mailroom'::pg_catalog.regnamespace
              AND pg_catalog.has_function_privilege('mailroom_operator', p.oid, 'EXECUTE')
              AND (NOT p.prosecdef
                   OR p.oid OPERATOR(pg_catalog.=) 'mailroom.message_status(bigint)'::pg_catalog.regprocedure)
        LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO mailroom_viewer', item.name);
        END LOOP;
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION mailroom.grants_0027(), mailroom.grants_9999() FROM PUBLIC;
