-- 0035: the changes feed writes one row per statement and application for the outbox's
-- changes, instead of one per message (issue 21).
--
-- The outbox trigger (0030, 0034) inserted one mailroom.changes row per message that
-- became sent, dead or cancelled: in the bulk drain 7 us of PostgreSQL CPU per email, a
-- sixth of the database's work on the send path (bench.phases, docs/BENCHMARKS.md), paid
-- for every application's messages whether it reads the feed or not. It now inserts one
-- mailroom.change_batches row per statement and application, the messages' ids, states
-- and reasons as arrays in message order; the application's first read (changes_since)
-- turns each batch into the rows it reads, numbered in the order they were written, and
-- deletes the batch. The cost of a row per change moves from the daemon's record to the
-- reader of the feed, in its own transaction; an application that never reads pays one
-- row per batch, pruned by the retention like the rest.
--
-- What an application reads does not change: changes_since returns the same rows, with the
-- same numbers in the same order (one numbering for rows and batches: a batch takes its id
-- from the sequence of mailroom.changes.id, so a batch of sends and the events written
-- after it keep their order); the stored cursors, the acknowledgements, the wake-ups and
-- the seven-day floor of the pruning are as before. mailroom.changes holds an
-- application's changes as it reads them, and the SES events' rows (not batched: one per
-- recipient, written by the events trigger, and the outbox trigger's late matches); the
-- outbox's changes an application has not read yet are in mailroom.change_batches, which
-- the operator and the viewer may read as they read mailroom.changes, and nobody writes
-- but the definer functions.
--
-- Upgrading: rows written before are numbered as before, in their order among the batches.

CREATE TABLE mailroom.change_batches (
    id bigint PRIMARY KEY,  -- its default, the sequence of mailroom.changes.id, is set below
    application text NOT NULL,
    message_ids bigint[] NOT NULL,
    states text[] NOT NULL,
    reasons text[] NOT NULL,  -- NULL elements: no reason (a send)
    at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT change_batches_arrays_match CHECK (
        pg_catalog.cardinality(message_ids) OPERATOR(pg_catalog.>=) 1
        AND pg_catalog.cardinality(states) OPERATOR(pg_catalog.=) pg_catalog.cardinality(message_ids)
        AND pg_catalog.cardinality(reasons) OPERATOR(pg_catalog.=) pg_catalog.cardinality(message_ids)
        AND pg_catalog.array_ndims(message_ids) OPERATOR(pg_catalog.=) 1
        AND pg_catalog.array_ndims(states) OPERATOR(pg_catalog.=) 1
        AND pg_catalog.array_ndims(reasons) OPERATOR(pg_catalog.=) 1),
    CONSTRAINT change_batches_states_known CHECK (states OPERATOR(pg_catalog.<@)
        ARRAY['sent', 'dead', 'cancelled']::text[])
);
-- changes_since() takes one application's batches in write order
CREATE INDEX change_batches_by_application ON mailroom.change_batches (application, id);

-- One write order for rows and batches: the identity sequence of mailroom.changes.id (its
-- name looked up, not assumed; the default stores the sequence's oid, not its name).
DO $$
BEGIN
    EXECUTE pg_catalog.format(
        'ALTER TABLE mailroom.change_batches ALTER COLUMN id SET DEFAULT pg_catalog.nextval(%L::pg_catalog.regclass)',
        pg_catalog.pg_get_serial_sequence('mailroom.changes', 'id'));
END
$$;

-- 0034's function, but for its first writer: one batch per application, not a row per message.
CREATE OR REPLACE FUNCTION mailroom.changes_from_outbox() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    apps text[];
    late text[];
BEGIN
    -- Nothing to write: no row became sent, dead or cancelled and none carries a provider
    -- id (the claim's rows, all 'sending'; a retry's new time). Both writers below need
    -- one or the other, so this answers for them at the cost of one scan of the new rows.
    IF NOT EXISTS (
        SELECT FROM changes_new AS n
        WHERE n.status OPERATOR(pg_catalog.=) ANY (ARRAY['sent', 'dead', 'cancelled']::text[])
           OR n.provider_message_id IS NOT NULL
    ) THEN
        RETURN NULL;
    END IF;
    -- The statement's changes, per application, in message order (0035).
    WITH written AS (
        INSERT INTO mailroom.change_batches (application, message_ids, states, reasons)
        SELECT n.enqueued_by,
               pg_catalog.array_agg(n.id ORDER BY n.id),
               pg_catalog.array_agg(n.status ORDER BY n.id),
               pg_catalog.array_agg(CASE WHEN n.status OPERATOR(pg_catalog.<>) 'sent'
                                         THEN n.last_error END ORDER BY n.id)
        FROM changes_new AS n
        JOIN changes_old AS o ON o.id OPERATOR(pg_catalog.=) n.id
        WHERE n.status OPERATOR(pg_catalog.=) ANY (ARRAY['sent', 'dead', 'cancelled']::text[])
          AND o.status OPERATOR(pg_catalog.<>) n.status
          AND n.enqueued_by IS NOT NULL
        GROUP BY n.enqueued_by
        RETURNING application
    )
    SELECT pg_catalog.array_agg(w.application) INTO apps FROM written AS w;
    -- A provider id set by this statement: the events SES published before it was
    -- visible wait in changes_unmatched (0034, written by the events trigger below).
    -- Taken shared by every statement that sets one (the lock orders this read against
    -- the events trigger's, see 0030); the table is empty unless such an event waits, or
    -- SES reports mail that mailroom did not send (those stay until prune_events).
    IF EXISTS (SELECT FROM changes_new AS n
               WHERE n.provider_message_id IS NOT NULL AND n.enqueued_by IS NOT NULL) THEN
        PERFORM pg_catalog.pg_advisory_xact_lock_shared(1835365237, 30);
        IF EXISTS (SELECT FROM mailroom.changes_unmatched) THEN
            WITH matched AS (
                -- = ANY (array): index probes into changes_unmatched whatever its size
                DELETE FROM mailroom.changes_unmatched AS u
                WHERE u.provider_message_id OPERATOR(pg_catalog.=) ANY (ARRAY(
                    SELECT n.provider_message_id
                    FROM changes_new AS n
                    JOIN changes_old AS o ON o.id OPERATOR(pg_catalog.=) n.id
                    WHERE n.provider_message_id IS NOT NULL AND n.enqueued_by IS NOT NULL
                      AND n.provider_message_id IS DISTINCT FROM o.provider_message_id))
                RETURNING u.event_id, u.provider_message_id
            ),
            written AS (
                -- rows, after the batch above: a send comes before its delivery
                INSERT INTO mailroom.changes
                    (application, message_id, state, reason, bounce_type, bounce_subtype,
                     recipient)
                SELECT n.enqueued_by, n.id, c.state, c.reason, c.bounce_type, c.bounce_subtype,
                       e.recipient
                FROM matched AS u
                JOIN changes_new AS n
                    ON n.provider_message_id OPERATOR(pg_catalog.=) u.provider_message_id
                -- one primary-key probe per matched event (OFFSET 0, as in 0030: the
                -- planner knows nothing of the CTE's size and might hash the events)
                CROSS JOIN LATERAL (
                    SELECT x.id, x.recipient, x.event_type, x.subtype, x.detail
                    FROM mailroom.events AS x
                    WHERE x.id OPERATOR(pg_catalog.=) u.event_id
                    OFFSET 0
                ) AS e
                CROSS JOIN LATERAL mailroom.event_as_change(e.event_type, e.subtype, e.detail)
                    AS c
                WHERE c.state IS NOT NULL
                ORDER BY n.id, e.id
                RETURNING application
            )
            SELECT pg_catalog.array_agg(DISTINCT w.application) INTO late FROM written AS w;
            apps := pg_catalog.array_cat(apps, late);
        END IF;
    END IF;
    IF apps IS NOT NULL THEN  -- no change, no one to wake
        PERFORM mailroom.changes_wake(apps);
    END IF;
    RETURN NULL;
END
$$;

-- 0030's function: the numbering now takes the caller's batches too, in the one write
-- order, and turns each into its rows; reading is as before.
CREATE OR REPLACE FUNCTION mailroom.changes_since(cursor bigint, max integer)
RETURNS TABLE (id bigint, message_id bigint, state text, reason text, bounce_type text,
               bounce_subtype text, recipient text, at timestamptz)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := session_user;
    head bigint;
    numbered bigint;
BEGIN
    IF cursor IS NULL OR max IS NULL OR max OPERATOR(pg_catalog.<) 1
       OR max OPERATOR(pg_catalog.>) 10000 THEN
        RAISE EXCEPTION 'mailroom.changes_since: cursor must be given and max be 1 to 10000,'
            ' got % and %', cursor, max
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One numbering reader per application at a time: a transaction-scoped advisory lock
    -- (1835365238, the name's hash), tried, not waited for. A reader of the same
    -- application holding it (numbering, or a read inside a transaction still open) makes
    -- this read return what is numbered and committed; a later read numbers the rest.
    -- Only the holder writes the head row, so nobody waits on it either.
    head := NULL;
    IF pg_catalog.pg_try_advisory_xact_lock(1835365238, pg_catalog.hashtext(caller)) THEN
        SELECT h.last INTO head FROM mailroom.change_heads AS h
        WHERE h.application OPERATOR(pg_catalog.=) caller;
        IF NOT FOUND THEN
            INSERT INTO mailroom.change_heads (application, last) VALUES (caller, 0);
            head := 0;
        END IF;
    END IF;
    -- A new statement, a new snapshot: what a reader before us numbered is seen numbered.
    -- fresh: the caller's unnumbered rows (one change each) and batches (n changes), each
    -- part at most 10000 entries in write order; rows the retention is deleting skipped.
    -- chosen: the prefix in write order holding up to 10000 changes (at least one entry),
    -- upto the changes up to and including each entry. Taking each part's first 10000
    -- entries loses nothing of the prefix: the last entry of a full part already ends at
    -- 10000 changes or more.
    WITH fresh_rows AS MATERIALIZED (
        SELECT c.id, 1 AS n FROM mailroom.changes AS c
        WHERE head IS NOT NULL
          AND c.application OPERATOR(pg_catalog.=) caller AND c.seq IS NULL
        ORDER BY c.id
        LIMIT 10000
        FOR UPDATE SKIP LOCKED
    ),
    fresh_batches AS MATERIALIZED (
        SELECT b.id, pg_catalog.cardinality(b.message_ids) AS n
        FROM mailroom.change_batches AS b
        WHERE head IS NOT NULL AND b.application OPERATOR(pg_catalog.=) caller
        ORDER BY b.id
        LIMIT 10000
        FOR UPDATE SKIP LOCKED
    ),
    fresh AS (
        SELECT r.id, r.n FROM fresh_rows AS r
        UNION ALL
        SELECT b.id, b.n FROM fresh_batches AS b
    ),
    chosen AS MATERIALIZED (
        SELECT t.id, t.n, t.upto
        FROM (SELECT f.id, f.n, pg_catalog.sum(f.n) OVER (ORDER BY f.id) AS upto
              FROM fresh AS f) AS t
        WHERE t.upto OPERATOR(pg_catalog.-) t.n OPERATOR(pg_catalog.<) 10000
    ),
    rows_numbered AS (
        UPDATE mailroom.changes AS c SET seq = head OPERATOR(pg_catalog.+) ch.upto
        FROM chosen AS ch
        WHERE c.id OPERATOR(pg_catalog.=) ch.id
        RETURNING 1
    ),
    batches_expanded AS (
        INSERT INTO mailroom.changes (application, seq, message_id, state, reason, at)
        SELECT b.application,
               head OPERATOR(pg_catalog.+) ch.upto OPERATOR(pg_catalog.-) ch.n
                   OPERATOR(pg_catalog.+) e.k,
               e.message_id, e.state, e.reason, b.at
        FROM chosen AS ch
        JOIN mailroom.change_batches AS b ON b.id OPERATOR(pg_catalog.=) ch.id
        CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(b.message_ids),
                                      pg_catalog.unnest(b.states),
                                      pg_catalog.unnest(b.reasons))
            WITH ORDINALITY AS e(message_id, state, reason, k)
        RETURNING 1
    ),
    batches_gone AS (
        DELETE FROM mailroom.change_batches AS b
        USING chosen AS ch
        WHERE b.id OPERATOR(pg_catalog.=) ch.id
        RETURNING 1
    )
    SELECT coalesce(pg_catalog.max(ch.upto), 0) INTO numbered FROM chosen AS ch;
    IF numbered OPERATOR(pg_catalog.>) 0 THEN
        UPDATE mailroom.change_heads AS h SET last = head OPERATOR(pg_catalog.+) numbered
        WHERE h.application OPERATOR(pg_catalog.=) caller;
    END IF;
    RETURN QUERY
        SELECT c.seq, c.message_id, c.state, c.reason, c.bounce_type, c.bounce_subtype,
               c.recipient, c.at
        FROM mailroom.changes AS c
        WHERE c.application OPERATOR(pg_catalog.=) caller
          AND c.seq OPERATOR(pg_catalog.>) cursor
        ORDER BY c.application, c.seq
        LIMIT max;
END
$$;

-- 0030's function, pruning the batches of the oldest changes too (what applications have
-- not read yet): up to batch rows and batch batches a pass; returns the changes pruned.
-- A batch turned into rows keeps its time, in rows numbered later: pruning in id order
-- may keep such rows longer than asked, never shorter.
CREATE OR REPLACE FUNCTION mailroom.prune_changes(keep_seconds double precision, batch integer)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pruned bigint;
    pruned_batched bigint;
    horizon timestamptz;
BEGIN
    -- NaN sorts above every number in PostgreSQL: the upper bound refuses it and infinity
    IF keep_seconds IS NULL OR NOT (keep_seconds OPERATOR(pg_catalog.>=) 604800
                                    AND keep_seconds OPERATOR(pg_catalog.<=) 3153600000)
       OR batch IS NULL OR batch OPERATOR(pg_catalog.<) 1
       OR batch OPERATOR(pg_catalog.>) 10000 THEN
        RAISE EXCEPTION 'mailroom.prune_changes: keep_seconds must be at least 604800 (seven'
            ' days: an application down for a week loses nothing) and at most 3153600000'
            ' (a century), and batch 1 to 10000, got % and %', keep_seconds, batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    horizon := pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => keep_seconds);
    WITH oldest AS MATERIALIZED (
        SELECT c.id, c.at FROM mailroom.changes AS c
        ORDER BY c.id
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    ),
    deleted AS (
        DELETE FROM mailroom.changes AS c
        USING oldest
        WHERE c.id OPERATOR(pg_catalog.=) oldest.id
          AND oldest.at OPERATOR(pg_catalog.<) horizon
        RETURNING 1
    )
    SELECT pg_catalog.count(*) INTO pruned FROM deleted;
    WITH oldest AS MATERIALIZED (
        SELECT b.id, b.at FROM mailroom.change_batches AS b
        ORDER BY b.id
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    ),
    deleted AS (
        DELETE FROM mailroom.change_batches AS b
        USING oldest
        WHERE b.id OPERATOR(pg_catalog.=) oldest.id
          AND oldest.at OPERATOR(pg_catalog.<) horizon
        RETURNING pg_catalog.cardinality(b.message_ids) AS n
    )
    SELECT coalesce(pg_catalog.sum(d.n), 0) INTO pruned_batched FROM deleted AS d;
    RETURN pruned OPERATOR(pg_catalog.+) pruned_batched;
END
$$;

CREATE FUNCTION mailroom.grants_0035() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mailroom_operator') THEN
        -- the changes not read yet, read-only like mailroom.changes (the viewer follows)
        GRANT SELECT ON mailroom.change_batches TO mailroom_operator;
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION mailroom.grants_0035() FROM PUBLIC;
