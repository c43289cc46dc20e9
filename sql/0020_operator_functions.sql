-- Operator actions only through audited functions (issue 18, item 4). mailroom_operator
-- held UPDATE and DELETE on the outbox and INSERT on the audit trail, so an operator login
-- could rewrite a pending message's recipients or content with no record, delete messages
-- unrecorded, and insert audit rows naming any operator and any messages.
--
-- Now the four actions (cancel, send now, dead retry, dead purge) are SECURITY DEFINER
-- functions: each checks its arguments, changes the rows and appends its audit row in one
-- transaction, and the operator keeps only SELECT on the tables. Who acted is the login
-- (session_user, stamped by audit_stamp); "operator" is the name the client gives (the
-- $USER of the CLI, the console's login): informative, bounded, never proof. The dead
-- letter functions act on one batch per call (FOR UPDATE SKIP LOCKED, in (updated_at, id)
-- order after the caller's cursor) so that a large run holds no lock for long; each batch
-- is one audit row, and a run's batches share the caller's action_id. Waking the daemons
-- (NOTIFY on the configured channel) stays with the caller, after each batch.
--
-- Suppressions are operator writes too: removing one lets mail go again to an address
-- that bounced or complained. `suppression add | remove | import` go through
-- operator_suppress / operator_unsuppress, audited as 'suppress' / 'unsuppress' (no
-- message ids; the addresses changed are in the row's selection). The recipient caps
-- (DELETE on recipient_sends, lifted by hand) keep their table grant.

-- The checks every action makes; a clear one-line error names the argument.
CREATE FUNCTION mailroom.operator_check(
    action_id uuid, operator text, via text, reason text, reason_required boolean
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF action_id IS NULL THEN
        RAISE EXCEPTION 'mailroom: action_id is required' USING ERRCODE = '22023';
    END IF;
    IF operator IS NULL OR pg_catalog.btrim(operator) OPERATOR(pg_catalog.=) ''
       OR pg_catalog.char_length(operator) OPERATOR(pg_catalog.>) 200 THEN
        RAISE EXCEPTION 'mailroom: operator (who acts) must be 1 to 200 characters'
            USING ERRCODE = '22023';
    END IF;
    IF via IS NULL OR via OPERATOR(pg_catalog.<>) ALL (ARRAY['cli', 'web']::pg_catalog.text[]) THEN
        RAISE EXCEPTION 'mailroom: via must be cli or web' USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.char_length(reason) OPERATOR(pg_catalog.>) 500 THEN
        RAISE EXCEPTION 'mailroom: the reason is % characters: at most 500',
            pg_catalog.char_length(reason) USING ERRCODE = '22023';
    END IF;
    IF reason_required AND pg_catalog.btrim(coalesce(reason, '')) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'mailroom: a reason is required' USING ERRCODE = '22023';
    END IF;
END
$$;

CREATE FUNCTION mailroom.operator_check_ids(ids bigint[], required boolean) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF ids IS NULL THEN
        IF required THEN
            RAISE EXCEPTION 'mailroom: message ids are required' USING ERRCODE = '22023';
        END IF;
        RETURN;
    END IF;
    IF pg_catalog.cardinality(ids) OPERATOR(pg_catalog.<) 1
       OR pg_catalog.cardinality(ids) OPERATOR(pg_catalog.>) 10000 THEN
        RAISE EXCEPTION 'mailroom: give 1 to 10000 message ids, got %',
            pg_catalog.cardinality(ids) USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.array_position(ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'mailroom: message ids must not be NULL' USING ERRCODE = '22023';
    END IF;
END
$$;

-- Pending (scheduled included) and retrying messages end "cancelled", with the reason as
-- their last error; a token's raw secret goes as for any final state. Rows a daemon is
-- sending are not touched. Returns the ids cancelled.
CREATE FUNCTION mailroom.operator_cancel(
    ids bigint[], reason text, operator text, via text, action_id uuid
) RETURNS TABLE (cancelled_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    done bigint[];
BEGIN
    PERFORM mailroom.operator_check_ids(ids, true);
    PERFORM mailroom.operator_check(action_id, operator, via, reason, true);
    WITH cancelled AS (
        UPDATE mailroom.outbox AS m
        SET status = 'cancelled',
            last_error = pg_catalog.left('cancelled by operator: ' OPERATOR(pg_catalog.||) reason, 1000),
            updated_at = pg_catalog.now()
        WHERE m.id OPERATOR(pg_catalog.=) ANY (ids)
          AND m.status OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'retrying']::pg_catalog.text[])
        RETURNING m.id
    )
    SELECT pg_catalog.array_agg(c.id ORDER BY c.id) INTO done FROM cancelled AS c;
    IF done IS NOT NULL THEN
        INSERT INTO mailroom.audit (action_id, operator, via, action, message_ids, reason)
        VALUES (action_id, operator, via, 'cancel', done, reason);
    END IF;
    RETURN QUERY SELECT pg_catalog.unnest(coalesce(done, '{}'::bigint[]));
END
$$;

-- Waiting messages (a backoff or a schedule) become due at once; token emails without
-- their secret stay (they could not be signed). Returns each row's queue to wake it.
CREATE FUNCTION mailroom.operator_send_now(
    ids bigint[], reason text, operator text, via text, action_id uuid
) RETURNS TABLE (message_id bigint, message_queue text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    done bigint[];
    queues text[];
BEGIN
    PERFORM mailroom.operator_check_ids(ids, true);
    PERFORM mailroom.operator_check(action_id, operator, via, reason, false);
    WITH expedited AS (
        UPDATE mailroom.outbox AS m
        SET next_attempt_at = pg_catalog.now(), updated_at = pg_catalog.now()
        WHERE m.id OPERATOR(pg_catalog.=) ANY (ids)
          AND m.status OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'retrying']::pg_catalog.text[])
          AND m.next_attempt_at OPERATOR(pg_catalog.>) pg_catalog.now()
          -- (0019: a token email's secret is in message_tokens while it may be sent)
          AND NOT (coalesce(pg_catalog.starts_with(m.idempotency_key, 'mailroom-token:'), false)
                   AND NOT EXISTS (SELECT FROM mailroom.message_tokens AS t
                                   WHERE t.message_id OPERATOR(pg_catalog.=) m.id))
        RETURNING m.id, m.queue
    )
    SELECT pg_catalog.array_agg(e.id ORDER BY e.id), pg_catalog.array_agg(e.queue ORDER BY e.id)
    INTO done, queues FROM expedited AS e;
    IF done IS NOT NULL THEN
        INSERT INTO mailroom.audit (action_id, operator, via, action, message_ids, reason)
        VALUES (action_id, operator, via, 'send_now', done, reason);
    END IF;
    RETURN QUERY SELECT d.i, d.q FROM ROWS FROM (pg_catalog.unnest(done), pg_catalog.unnest(queues)) AS d (i, q);
END
$$;

-- The arguments of a dead-letter batch; the selection recorded is built here, from the
-- filters that select the rows, not taken from the client.
CREATE FUNCTION mailroom.operator_dead_check(
    batch integer, ids bigint[], queue text, template text, reason text,
    since timestamptz, before timestamptz, operator text, via text, action_id uuid,
    note text
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF batch IS NULL OR batch OPERATOR(pg_catalog.<) 1 OR batch OPERATOR(pg_catalog.>) 10000 THEN
        RAISE EXCEPTION 'mailroom: batch must be 1 to 10000 rows, got %', batch
            USING ERRCODE = '22023';
    END IF;
    IF ids IS NULL AND queue IS NULL AND template IS NULL AND reason IS NULL
       AND since IS NULL AND before IS NULL THEN
        RAISE EXCEPTION 'mailroom: say which dead letters: ids, a queue or another filter'
            USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.char_length(queue) OPERATOR(pg_catalog.>) 200
       OR pg_catalog.char_length(template) OPERATOR(pg_catalog.>) 200
       OR pg_catalog.char_length(reason) OPERATOR(pg_catalog.>) 500 THEN
        RAISE EXCEPTION 'mailroom: a filter is too long (queue and template at most 200'
            ' characters, the error text at most 500)' USING ERRCODE = '22023';
    END IF;
    PERFORM mailroom.operator_check_ids(ids, false);
    PERFORM mailroom.operator_check(action_id, operator, via, note, false);
    RETURN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'queue', queue, 'template', template, 'reason', reason,
        'since', since, 'before', before));
END
$$;

-- Re-arm one batch of matching dead letters after the cursor, dead by the snapshot:
-- pending, attempts 0, due now. Token emails are skipped (their secret is gone). Ids that
-- are not retryable dead letters are refused on the first batch (cursor at the start).
CREATE FUNCTION mailroom.operator_dead_retry(
    snapshot timestamptz, after_at timestamptz, after_id bigint, batch integer,
    ids bigint[], queue text, template text, reason text, since timestamptz,
    before timestamptz, operator text, via text, action_id uuid, note text
) RETURNS TABLE (message_id bigint, message_queue text, died_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    selection jsonb;
    wrong record;
    done bigint[];
    queues text[];
    stamps timestamptz[];
BEGIN
    selection := mailroom.operator_dead_check(batch, ids, queue, template, reason, since,
                                              before, operator, via, action_id, note);
    IF ids IS NOT NULL AND coalesce(after_id, 0) OPERATOR(pg_catalog.=) 0 THEN
        SELECT i.id, o.status,
               coalesce(pg_catalog.starts_with(o.idempotency_key, 'mailroom-token:'), false) AS token
        INTO wrong
        FROM pg_catalog.unnest(ids) AS i (id)
        LEFT JOIN mailroom.outbox AS o ON o.id OPERATOR(pg_catalog.=) i.id
        WHERE o.id IS NULL OR o.status OPERATOR(pg_catalog.<>) 'dead'
           OR coalesce(pg_catalog.starts_with(o.idempotency_key, 'mailroom-token:'), false)
        ORDER BY i.id
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'mailroom: message % %', wrong.id, CASE
                WHEN wrong.status IS NULL THEN 'does not exist'
                WHEN wrong.token THEN 'is a token email: its secret was discarded when it died'
                ELSE 'is ' OPERATOR(pg_catalog.||) wrong.status
                     OPERATOR(pg_catalog.||) ', not dead: only dead letters are retried'
                END USING ERRCODE = '22023';
        END IF;
    END IF;
    WITH chosen AS MATERIALIZED (
        SELECT o.id, o.updated_at
        FROM mailroom.outbox AS o
        WHERE o.status OPERATOR(pg_catalog.=) 'dead'
          AND NOT coalesce(pg_catalog.starts_with(o.idempotency_key, 'mailroom-token:'), false)
          AND o.updated_at OPERATOR(pg_catalog.<=) snapshot
          AND (o.updated_at, o.id) OPERATOR(pg_catalog.>) (after_at, after_id)
          AND mailroom.dead_letter_matches(o, ids, queue, template, reason, since, before)
        ORDER BY o.updated_at, o.id
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    ),
    retried AS (
        UPDATE mailroom.outbox AS m
        SET status = 'pending', attempts = 0, next_attempt_at = pg_catalog.now(),
            locked_by = NULL, locked_until = NULL, updated_at = pg_catalog.now()
        FROM chosen
        WHERE m.id OPERATOR(pg_catalog.=) chosen.id AND m.status OPERATOR(pg_catalog.=) 'dead'
        RETURNING m.id, m.queue, chosen.updated_at
    )
    SELECT pg_catalog.array_agg(r.id ORDER BY r.id), pg_catalog.array_agg(r.queue ORDER BY r.id),
           pg_catalog.array_agg(r.updated_at ORDER BY r.id)
    INTO done, queues, stamps FROM retried AS r;
    IF done IS NOT NULL THEN
        INSERT INTO mailroom.audit (action_id, operator, via, action, message_ids, reason,
                                    selection)
        VALUES (action_id, operator, via, 'dead_retry', done, note, selection);
    END IF;
    RETURN QUERY SELECT d.i, d.q, d.u FROM ROWS FROM (pg_catalog.unnest(done), pg_catalog.unnest(queues),
                                             pg_catalog.unnest(stamps)) AS d (i, q, u);
END
$$;

-- Delete one batch of matching dead letters after the cursor, dead by the snapshot (their
-- attempts cascade). Returns each row's id and updated_at (the cursor).
CREATE FUNCTION mailroom.operator_dead_purge(
    snapshot timestamptz, after_at timestamptz, after_id bigint, batch integer,
    ids bigint[], queue text, template text, reason text, since timestamptz,
    before timestamptz, operator text, via text, action_id uuid, note text
) RETURNS TABLE (message_id bigint, died_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    selection jsonb;
    done bigint[];
    stamps timestamptz[];
BEGIN
    selection := mailroom.operator_dead_check(batch, ids, queue, template, reason, since,
                                              before, operator, via, action_id, note);
    WITH chosen AS MATERIALIZED (
        SELECT o.id, o.updated_at
        FROM mailroom.outbox AS o
        WHERE o.status OPERATOR(pg_catalog.=) 'dead'
          AND o.updated_at OPERATOR(pg_catalog.<=) snapshot
          AND (o.updated_at, o.id) OPERATOR(pg_catalog.>) (after_at, after_id)
          AND mailroom.dead_letter_matches(o, ids, queue, template, reason, since, before)
        ORDER BY o.updated_at, o.id
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    ),
    purged AS (
        DELETE FROM mailroom.outbox AS m
        USING chosen
        WHERE m.id OPERATOR(pg_catalog.=) chosen.id AND m.status OPERATOR(pg_catalog.=) 'dead'
        RETURNING m.id, chosen.updated_at
    )
    SELECT pg_catalog.array_agg(p.id ORDER BY p.id), pg_catalog.array_agg(p.updated_at ORDER BY p.id)
    INTO done, stamps FROM purged AS p;
    IF done IS NOT NULL THEN
        INSERT INTO mailroom.audit (action_id, operator, via, action, message_ids, reason,
                                    selection)
        VALUES (action_id, operator, via, 'dead_purge', done, note, selection);
    END IF;
    RETURN QUERY SELECT d.i, d.u FROM ROWS FROM (pg_catalog.unnest(done), pg_catalog.unnest(stamps)) AS d (i, u);
END
$$;

ALTER TABLE mailroom.audit DROP CONSTRAINT audit_action_known;
ALTER TABLE mailroom.audit ADD CONSTRAINT audit_action_known
    CHECK (action OPERATOR(pg_catalog.=) ANY (ARRAY['cancel', 'send_now', 'dead_retry',
           'dead_purge', 'suppress', 'unsuppress']::pg_catalog.text[]));

CREATE FUNCTION mailroom.operator_check_addresses(addresses text[]) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF addresses IS NULL OR pg_catalog.cardinality(addresses) OPERATOR(pg_catalog.<) 1
       OR pg_catalog.cardinality(addresses) OPERATOR(pg_catalog.>) 10000 THEN
        RAISE EXCEPTION 'mailroom: give 1 to 10000 addresses, got %',
            coalesce(pg_catalog.cardinality(addresses), 0) USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.unnest(addresses) AS a
               WHERE a IS NULL OR pg_catalog.char_length(a) OPERATOR(pg_catalog.>) 320) THEN
        RAISE EXCEPTION 'mailroom: an address is NULL or longer than 320 characters'
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- Suppress the addresses not yet suppressed (an existing entry keeps its reason and
-- date): by hand ('manual', one detail for all) or from SES ('ses_import', a detail per
-- address). Returns the addresses added.
CREATE FUNCTION mailroom.operator_suppress(
    addresses text[], reason text, details text[], operator text, via text, action_id uuid
) RETURNS TABLE (suppressed text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    done text[];
BEGIN
    PERFORM mailroom.operator_check_addresses(addresses);
    PERFORM mailroom.operator_check(action_id, operator, via, NULL, false);
    IF reason IS NULL OR reason OPERATOR(pg_catalog.<>) ALL (ARRAY['manual', 'ses_import']::pg_catalog.text[]) THEN
        RAISE EXCEPTION 'mailroom: an operator suppresses as manual or ses_import'
            USING ERRCODE = '22023';
    END IF;
    IF details IS NOT NULL AND pg_catalog.cardinality(details)
       OPERATOR(pg_catalog.<>) pg_catalog.cardinality(addresses) THEN
        RAISE EXCEPTION 'mailroom: give one detail per address, or none'
            USING ERRCODE = '22023';
    END IF;
    WITH added AS (
        INSERT INTO mailroom.suppressions (address, reason, detail)
        SELECT mailroom.normalize_address(x.a), reason, x.d
        FROM ROWS FROM (pg_catalog.unnest(addresses), pg_catalog.unnest(details)) AS x (a, d)
        ON CONFLICT (address) DO NOTHING
        RETURNING address
    )
    SELECT pg_catalog.array_agg(a.address ORDER BY a.address) INTO done FROM added AS a;
    IF done IS NOT NULL THEN
        INSERT INTO mailroom.audit (action_id, operator, via, action, message_ids, reason,
                                    selection)
        VALUES (action_id, operator, via, 'suppress', '{}',
                CASE WHEN reason OPERATOR(pg_catalog.=) 'manual'
                     THEN pg_catalog.left(details[1], 500) END,
                pg_catalog.jsonb_build_object('reason', reason, 'addresses', done));
    END IF;
    RETURN QUERY SELECT pg_catalog.unnest(coalesce(done, '{}'::text[]));
END
$$;

-- Unsuppress the addresses; returns each one removed and the reason it had.
CREATE FUNCTION mailroom.operator_unsuppress(
    addresses text[], operator text, via text, action_id uuid
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
    PERFORM mailroom.operator_check(action_id, operator, via, NULL, false);
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
        INSERT INTO mailroom.audit (action_id, operator, via, action, message_ids, selection)
        VALUES (action_id, operator, via, 'unsuppress', '{}',
                pg_catalog.jsonb_build_object('addresses', done, 'reasons', reasons));
    END IF;
    RETURN QUERY SELECT x.a, x.r
        FROM ROWS FROM (pg_catalog.unnest(done), pg_catalog.unnest(reasons)) AS x (a, r);
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;

-- Run after grants_0008 and grants_0010 (grant_roles takes them in name order), which
-- grant the table writes again on every migrate: revoked here each time.
CREATE FUNCTION mailroom.grants_0020() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mailroom_operator') THEN
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON mailroom.outbox, mailroom.attempts
            FROM mailroom_operator;
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON mailroom.audit, mailroom.suppressions
            FROM mailroom_operator;
        GRANT SELECT ON mailroom.outbox, mailroom.attempts, mailroom.audit,
            mailroom.suppressions TO mailroom_operator;
        GRANT EXECUTE ON FUNCTION
            mailroom.operator_cancel(bigint[], text, text, text, uuid),
            mailroom.operator_send_now(bigint[], text, text, text, uuid),
            mailroom.operator_dead_retry(timestamptz, timestamptz, bigint, integer, bigint[],
                                         text, text, text, timestamptz, timestamptz, text,
                                         text, uuid, text),
            mailroom.operator_dead_purge(timestamptz, timestamptz, bigint, integer, bigint[],
                                         text, text, text, timestamptz, timestamptz, text,
                                         text, uuid, text),
            mailroom.operator_suppress(text[], text, text[], text, text, uuid),
            mailroom.operator_unsuppress(text[], text, text, uuid)
        TO mailroom_operator;
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION mailroom.grants_0020() FROM PUBLIC;
