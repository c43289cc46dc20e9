-- 0030: the application hears back (issue 23, item 5). A feed of what became of each
-- application's own messages: sent, delivered, bounced, complained, dead, cancelled.
--
-- 1. mailroom.changes: one row per change; its seq, numbered per application in the order
--    rows became visible, is the application's cursor (see the table). Written by two
--    statement-level triggers with transition tables, in the transaction of the change
--    itself (a change is in the feed if and only if it happened): the outbox's status
--    moving to sent, dead or cancelled, and the SES events stored for a message mailroom
--    sent (Delivery, Bounce, Complaint; one row per recipient). A row belongs to the
--    application that enqueued the message (outbox.enqueued_by, session_user at enqueue:
--    the rule of cancel() and message_status()). Messages with no enqueuer (before 0008)
--    and events for mail mailroom did not send have no application and no row.
-- 2. Reading: mailroom.changes_since(cursor, max) returns the caller's rows after cursor,
--    the caller decided here from session_user, never from an argument. Nobody but the
--    schema owner writes the table (the triggers and prune_changes are SECURITY DEFINER);
--    the operator and the viewer may read it.
-- 3. Waking: each trigger sends one NOTIFY per application with changes, on the channel
--    mailroom.changes_channel(application) ('mailroom_changes_' and 32 hex characters of
--    the role name's SHA-256), with an empty payload: LISTEN needs no privilege in
--    PostgreSQL, so a channel can be heard by anyone; it says only "something changed".
--    A notification missed while an application was down is harmless: it catches up
--    from its cursor.
-- 4. Stored cursors: mailroom.change_cursors, per application and consumer name, read and
--    moved forward only through changes_cursor() and changes_ack(), each for session_user.
-- 5. Pruning: mailroom.prune_changes(keep_seconds, batch) for the daemon's retention, with
--    a floor of seven days that holds against the daemon's own role, so an application
--    down for a week loses nothing (MAILROOM_RETENTION_CHANGES, docs/applications.md).

-- id is the order rows were written in, not the order they became visible: a transaction
-- that took id 100 may commit after one that took 101, and a reader whose cursor passed 101
-- would never see 100. So an application's cursor is seq, its own numbering, given to its
-- rows when it first reads them (changes_since, one reader of an application at a time):
-- what is committed by then gets the next numbers, what commits later gets later ones, and
-- no row ever gets a number below one already read.
-- The daemon's triggers only insert (seq NULL); the numbering is the reader's work.
CREATE TABLE mailroom.changes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    application text NOT NULL,
    seq bigint,
    message_id bigint NOT NULL,
    state text NOT NULL,
    reason text,
    bounce_type text,
    bounce_subtype text,
    recipient text,
    at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT changes_state_known CHECK (state OPERATOR(pg_catalog.=) ANY (
        ARRAY['sent', 'delivered', 'bounced', 'complained', 'dead', 'cancelled']::text[]))
);
-- changes_since() numbers one application's new rows (seq IS NULL) and reads them in
-- cursor order: one index for both
CREATE INDEX changes_by_application ON mailroom.changes (application, seq);

-- Each application's last number given (kept when its rows are pruned: numbers never
-- start again).
CREATE TABLE mailroom.change_heads (
    application text PRIMARY KEY,
    last bigint NOT NULL DEFAULT 0
);

CREATE TABLE mailroom.change_cursors (
    application text NOT NULL,
    consumer text NOT NULL,
    acked bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (application, consumer),
    CONSTRAINT change_cursors_consumer_1_to_200_chars
        CHECK (pg_catalog.length(consumer) OPERATOR(pg_catalog.>=) 1
               AND pg_catalog.length(consumer) OPERATOR(pg_catalog.<=) 200),
    CONSTRAINT change_cursors_acked_not_negative
        CHECK (acked OPERATOR(pg_catalog.>=) 0)
);

-- The channel an application's wake-ups go to; a NOTIFY channel is an identifier (at most
-- 63 bytes), a role name may be as long and hold any character: a digest fits every one.
CREATE FUNCTION mailroom.changes_channel(application text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN 'mailroom_changes_' OPERATOR(pg_catalog.||) pg_catalog."left"(pg_catalog.encode(
    pg_catalog.sha256(pg_catalog.convert_to(application, 'UTF8')), 'hex'), 32);

-- Wakes each application in ``apps`` (an empty NOTIFY on its channel), once each. Skipped
-- when the NOTIFY queue is half full (a session that LISTENs and never reads holds its
-- tail), because a full queue fails the commit, here the daemon's record; readers catch
-- up on their poll. Called by both writers below.
CREATE FUNCTION mailroom.changes_wake(apps text[]) RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
RETURN (
    SELECT pg_catalog.count(pg_catalog.pg_notify(mailroom.changes_channel(a.name), ''))
    FROM (SELECT DISTINCT u.name FROM pg_catalog.unnest(apps) AS u(name)) AS a
    WHERE pg_catalog.pg_notification_queue_usage() OPERATOR(pg_catalog.<) 0.5
);

-- ---------------------------------------------------------------- the writers
-- An SES event may be stored before its message's outcome is recorded (the events reader
-- and the daemon's record race; SES can answer the call and publish the event within
-- milliseconds): an event finds its message through outbox.provider_message_id, which the
-- record sets. So each side writes what the other cannot see: the events trigger, the
-- events of messages whose provider id is set; the outbox trigger, when it sets a provider
-- id, the events already stored for it. Two transactions doing both at once would each miss
-- the other's uncommitted row; a transaction-scoped advisory lock (keys 1835365237, 30: a
-- class of its own beside caps_lock's and events_lock's) orders them: the outbox trigger
-- holds it shared (records never wait for each other), the events trigger exclusive, each
-- before reading the other's table, so whichever comes second reads (a VOLATILE function
-- takes a new snapshot per statement) what the first committed. Taken only by statements
-- that set a provider id, and by an events statement with an event whose message it did
-- not find at first (rare: SES publishes seconds after it answered).

-- What an SES event says as a change: deliveries, bounces and complaints (NULL for the
-- other types). A bounce's subtype is stored as 'Permanent/General': its two halves; the
-- reason is the SMTP diagnostic (a delivery's SMTP response), a complaint's feedback type.
CREATE FUNCTION mailroom.event_as_change(event_type text, subtype text, detail text,
    OUT state text, OUT reason text, OUT bounce_type text, OUT bounce_subtype text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (CASE event_type WHEN 'Delivery' THEN 'delivered' WHEN 'Bounce' THEN 'bounced'
                        WHEN 'Complaint' THEN 'complained' END,
        CASE WHEN event_type OPERATOR(pg_catalog.=) 'Complaint' THEN NULLIF(subtype, '')
             ELSE detail END,
        CASE WHEN event_type OPERATOR(pg_catalog.=) 'Bounce'
             THEN pg_catalog.split_part(subtype, '/', 1) END,
        CASE WHEN event_type OPERATOR(pg_catalog.=) 'Bounce'
             THEN NULLIF(pg_catalog.split_part(subtype, '/', 2), '') END);

-- After every UPDATE statement on the outbox (the claim, the record, cancel, the operator's
-- actions). Statement-level: one call per statement, however many rows; the claim's rows
-- (status sending) are filtered out by the first condition. A status that does not change
-- (a re-recorded outcome) writes nothing.
CREATE FUNCTION mailroom.changes_from_outbox() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    apps text[];
    late text[];
BEGIN
    WITH written AS (
        INSERT INTO mailroom.changes (application, message_id, state, reason)
        SELECT n.enqueued_by, n.id, n.status,
               CASE WHEN n.status OPERATOR(pg_catalog.<>) 'sent' THEN n.last_error END
        FROM changes_new AS n
        JOIN changes_old AS o ON o.id OPERATOR(pg_catalog.=) n.id
        WHERE n.status OPERATOR(pg_catalog.=) ANY (ARRAY['sent', 'dead', 'cancelled']::text[])
          AND o.status OPERATOR(pg_catalog.<>) n.status
          AND n.enqueued_by IS NOT NULL
        ORDER BY n.id
        RETURNING application
    )
    SELECT pg_catalog.array_agg(DISTINCT w.application) INTO apps FROM written AS w;
    -- a provider id set by this statement: the events stored before it (see above)
    IF EXISTS (SELECT FROM changes_new AS n
               JOIN changes_old AS o ON o.id OPERATOR(pg_catalog.=) n.id
               WHERE n.provider_message_id IS NOT NULL AND n.enqueued_by IS NOT NULL
                 AND n.provider_message_id IS DISTINCT FROM o.provider_message_id) THEN
        PERFORM pg_catalog.pg_advisory_xact_lock_shared(1835365237, 30);
        WITH written AS (
            INSERT INTO mailroom.changes
                (application, message_id, state, reason, bounce_type, bounce_subtype, recipient)
            SELECT n.enqueued_by, n.id, c.state, c.reason, c.bounce_type, c.bounce_subtype,
                   e.recipient
            FROM changes_new AS n
            JOIN changes_old AS o ON o.id OPERATOR(pg_catalog.=) n.id
            -- one index probe per message (OFFSET 0 keeps the planner, which knows nothing
            -- of a transition table's size, from hashing the whole events table instead)
            CROSS JOIN LATERAL (
                SELECT x.id, x.recipient, x.event_type, x.subtype, x.detail
                FROM mailroom.events AS x
                WHERE x.provider_message_id OPERATOR(pg_catalog.=) n.provider_message_id
                OFFSET 0
            ) AS e
            CROSS JOIN LATERAL mailroom.event_as_change(e.event_type, e.subtype, e.detail) AS c
            WHERE n.enqueued_by IS NOT NULL
              AND n.provider_message_id IS DISTINCT FROM o.provider_message_id
              AND c.state IS NOT NULL
            ORDER BY n.id, e.id
            RETURNING application
        )
        SELECT pg_catalog.array_agg(DISTINCT w.application) INTO late FROM written AS w;
        apps := pg_catalog.array_cat(apps, late);
    END IF;
    PERFORM mailroom.changes_wake(apps);
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_changes AFTER UPDATE ON mailroom.outbox
    REFERENCING OLD TABLE AS changes_old NEW TABLE AS changes_new
    FOR EACH STATEMENT EXECUTE FUNCTION mailroom.changes_from_outbox();

-- After every INSERT statement on the events (the events reader stores a batch in one):
-- the deliveries, bounces and complaints of messages mailroom sent, per recipient. The
-- common case, every event's message found (its record committed long before), takes no
-- lock. Only events whose message is not found yet (a record in flight, or mail mailroom
-- did not send) take the lock, exclusive, and look again.
CREATE FUNCTION mailroom.changes_from_events() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    apps text[];
    late text[];
    unmatched bigint[];
BEGIN
    -- one statement, one snapshot: an event is either written here or left for later
    WITH judged AS MATERIALIZED (
        SELECT e.id, e.recipient, c.state, c.reason, c.bounce_type, c.bounce_subtype,
               o.message_id, o.enqueued_by
        FROM changes_events AS e
        CROSS JOIN LATERAL mailroom.event_as_change(e.event_type, e.subtype, e.detail) AS c
        -- one index probe per event (outbox_provider_message_id; OFFSET 0: see above)
        LEFT JOIN LATERAL (
            SELECT m.id AS message_id, m.enqueued_by FROM mailroom.outbox AS m
            WHERE m.provider_message_id OPERATOR(pg_catalog.=) e.provider_message_id
            OFFSET 0
        ) AS o ON true
        WHERE c.state IS NOT NULL
    ),
    written AS (
        INSERT INTO mailroom.changes
            (application, message_id, state, reason, bounce_type, bounce_subtype, recipient)
        SELECT j.enqueued_by, j.message_id, j.state, j.reason, j.bounce_type,
               j.bounce_subtype, j.recipient
        FROM judged AS j
        WHERE j.enqueued_by IS NOT NULL
        ORDER BY j.id
        RETURNING application
    )
    SELECT (SELECT pg_catalog.array_agg(DISTINCT w.application) FROM written AS w),
           (SELECT pg_catalog.array_agg(j.id) FROM judged AS j WHERE j.message_id IS NULL)
    INTO apps, unmatched;
    IF unmatched IS NOT NULL THEN
        PERFORM pg_catalog.pg_advisory_xact_lock(1835365237, 30);
        WITH written AS (
            INSERT INTO mailroom.changes
                (application, message_id, state, reason, bounce_type, bounce_subtype, recipient)
            SELECT o.enqueued_by, o.id, c.state, c.reason, c.bounce_type, c.bounce_subtype,
                   e.recipient
            FROM changes_events AS e
            CROSS JOIN LATERAL mailroom.event_as_change(e.event_type, e.subtype, e.detail) AS c
            CROSS JOIN LATERAL (
                SELECT m.id, m.enqueued_by FROM mailroom.outbox AS m
                WHERE m.provider_message_id OPERATOR(pg_catalog.=) e.provider_message_id
                OFFSET 0
            ) AS o
            WHERE e.id OPERATOR(pg_catalog.=) ANY (unmatched) AND o.enqueued_by IS NOT NULL
            ORDER BY e.id
            RETURNING application
        )
        SELECT pg_catalog.array_agg(DISTINCT w.application) INTO late FROM written AS w;
        apps := pg_catalog.array_cat(apps, late);
    END IF;
    PERFORM mailroom.changes_wake(apps);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_changes AFTER INSERT ON mailroom.events
    REFERENCING NEW TABLE AS changes_events
    FOR EACH STATEMENT EXECUTE FUNCTION mailroom.changes_from_events();

-- ---------------------------------------------------------------- the readers
-- The caller's changes after cursor, oldest first, at most max (1 to 10000); id is seq,
-- the caller's own numbering (above). The caller is session_user (inside this SECURITY
-- DEFINER function current_user is the owner). Numbers the caller's new rows first, in
-- the order they were written, one reader of an application at a time (when another
-- reader of the same application is numbering, the rows already numbered are returned,
-- and the new ones wait for a later read: read in autocommit mode, so that nobody holds
-- the numbering long).
CREATE FUNCTION mailroom.changes_since(cursor bigint, max integer)
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
    -- a new statement, a new snapshot: what a reader before us numbered is seen numbered
    WITH fresh AS (
        SELECT c.id FROM mailroom.changes AS c
        WHERE head IS NOT NULL
          AND c.application OPERATOR(pg_catalog.=) caller AND c.seq IS NULL
        ORDER BY c.id
        LIMIT 10000  -- a bounded statement after a long absence; the next read goes on
        FOR UPDATE SKIP LOCKED  -- rows the retention is deleting
    ),
    ordered AS (
        SELECT f.id, pg_catalog.row_number() OVER (ORDER BY f.id) AS n FROM fresh AS f
    ),
    done AS (
        UPDATE mailroom.changes AS c SET seq = head OPERATOR(pg_catalog.+) o.n
        FROM ordered AS o
        WHERE c.id OPERATOR(pg_catalog.=) o.id
        RETURNING 1
    )
    SELECT pg_catalog.count(*) INTO numbered FROM done;
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

-- The caller's stored cursor for one consumer (0 when it has none).
CREATE FUNCTION mailroom.changes_cursor(consumer text) RETURNS bigint
LANGUAGE sql STABLE STRICT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN coalesce((
    SELECT k.acked FROM mailroom.change_cursors AS k
    WHERE k.application OPERATOR(pg_catalog.=) session_user::text
      AND k.consumer OPERATOR(pg_catalog.=) changes_cursor.consumer), 0);

-- Move the caller's cursor for one consumer forward to upto (never back: a late or
-- repeated acknowledgement does not replay what was handled since); returns the cursor.
-- A position past the caller's own last change is refused: it would skip changes to come.
CREATE FUNCTION mailroom.changes_ack(consumer text, upto bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := session_user;
    newest bigint;
    stored bigint;
BEGIN
    IF consumer IS NULL OR upto IS NULL OR upto OPERATOR(pg_catalog.<) 0 THEN
        RAISE EXCEPTION 'mailroom.changes_ack: consumer and a position of 0 or more are'
            ' needed, got % and %', consumer, upto
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO mailroom.change_cursors AS k (application, consumer, acked)
    VALUES (caller, changes_ack.consumer, 0)
    ON CONFLICT ON CONSTRAINT change_cursors_pkey DO NOTHING;
    SELECT k.acked INTO stored FROM mailroom.change_cursors AS k
    WHERE k.application OPERATOR(pg_catalog.=) caller
      AND k.consumer OPERATOR(pg_catalog.=) changes_ack.consumer
    FOR UPDATE;
    IF upto OPERATOR(pg_catalog.<=) stored THEN
        RETURN stored;
    END IF;
    SELECT h.last INTO newest FROM mailroom.change_heads AS h
    WHERE h.application OPERATOR(pg_catalog.=) caller;
    IF upto OPERATOR(pg_catalog.>) coalesce(newest, 0) THEN
        RAISE EXCEPTION 'mailroom.changes_ack: position % is past your last change (%)',
            upto, coalesce(newest, 0)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE mailroom.change_cursors AS k
    SET acked = upto, updated_at = pg_catalog.now()
    WHERE k.application OPERATOR(pg_catalog.=) caller
      AND k.consumer OPERATOR(pg_catalog.=) changes_ack.consumer;
    RETURN upto;
END
$$;

-- LISTEN on the caller's channel (in effect from the commit, like LISTEN itself): the
-- channel is decided here, from session_user, and returned.
CREATE FUNCTION mailroom.changes_listen() RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    channel text := mailroom.changes_channel(session_user::text);
BEGIN
    EXECUTE pg_catalog.format('LISTEN %I', channel);
    RETURN channel;
END
$$;

-- ---------------------------------------------------------------- pruning
-- The daemon's retention: up to batch of the oldest changes recorded longer ago than
-- keep_seconds (at least seven days, whatever the caller asks). The candidates are the
-- first batch rows in cursor order (at follows id: both are set at insert), so a pass
-- reads at most batch rows and needs no index on at.
CREATE FUNCTION mailroom.prune_changes(keep_seconds double precision, batch integer)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pruned bigint;
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
          AND oldest.at OPERATOR(pg_catalog.<) (pg_catalog.now()
              OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => keep_seconds))
        RETURNING 1
    )
    SELECT pg_catalog.count(*) INTO pruned FROM deleted;
    RETURN pruned;
END
$$;

-- ---------------------------------------------------------------- grants
CREATE FUNCTION mailroom.grants_0030() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mailroom_app') THEN
        GRANT EXECUTE ON FUNCTION mailroom.changes_since(bigint, integer),
            mailroom.changes_cursor(text), mailroom.changes_ack(text, bigint),
            mailroom.changes_channel(text), mailroom.changes_listen()
            TO mailroom_app;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mailroom_daemon') THEN
        GRANT EXECUTE ON FUNCTION mailroom.prune_changes(double precision, integer)
            TO mailroom_daemon;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mailroom_operator') THEN
        -- what each application heard: read-only, like the events (the viewer follows)
        GRANT SELECT ON mailroom.changes, mailroom.change_cursors, mailroom.change_heads
            TO mailroom_operator;
    END IF;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
