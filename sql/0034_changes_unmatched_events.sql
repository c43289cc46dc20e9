-- 0034: the changes feed's triggers (0030) cost the claim nothing, and the record no
-- longer looks through every stored SES event (issue 21).
--
-- The outbox trigger runs after every UPDATE statement on the outbox, the daemon's claim
-- included: each claim joined its 500 new rows to the old ones to insert no change,
-- looked for provider ids it had not set, and called changes_wake() with no application
-- (pg_stat_statements over idle sends: the one-message claim 0.20 ms at 9fb73c5, 0.37 ms
-- before this). The function now returns at once when no new row is sent, dead or
-- cancelled and none has a provider id: exactly the statements in which neither of its
-- writers could write a row; and it wakes nobody when nothing changed.
--
-- An SES event can be stored before the record that sets its message's provider id
-- commits (0030 explains the race and the advisory lock that orders the two triggers).
-- Until now the outbox trigger settled it from its side by probing mailroom.events for
-- every provider id a statement set: 500 index probes per 500-message record, nearly
-- always finding nothing (SES publishes seconds after it answers), in an index that grows
-- with every event kept. The events trigger knows when it did not find a message: it now
-- notes such events (after its second look, under the exclusive lock) in
-- mailroom.changes_unmatched, and the outbox trigger reads that table instead: one
-- EXISTS on an empty table in the common case, index probes into it otherwise, the
-- entries it matches deleted as their changes are written. The race is closed as before:
-- whichever trigger takes the lock second reads (a new snapshot) what the first committed.
--
-- changes_unmatched is written only by the two triggers (SECURITY DEFINER) and read by
-- nobody else: no role is granted anything on it. An entry goes with its event
-- (ON DELETE CASCADE: prune_events) when no record ever matches it (mail that mailroom
-- did not send, on an SES account or topic shared with another sender).
--
-- Upgrading: events stored in the last day whose message is not found are noted once
-- here, so that a record still in flight across the upgrade writes their changes.

CREATE TABLE mailroom.changes_unmatched (
    event_id bigint PRIMARY KEY REFERENCES mailroom.events (id) ON DELETE CASCADE,
    provider_message_id text NOT NULL
);
CREATE INDEX changes_unmatched_by_provider_id
    ON mailroom.changes_unmatched (provider_message_id);

INSERT INTO mailroom.changes_unmatched (event_id, provider_message_id)
SELECT e.id, e.provider_message_id
FROM mailroom.events AS e
WHERE e.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 day')
  AND e.provider_message_id IS NOT NULL
  AND e.event_type OPERATOR(pg_catalog.=) ANY (ARRAY['Delivery', 'Bounce', 'Complaint']::text[])
  AND NOT EXISTS (SELECT FROM mailroom.outbox AS m
                  WHERE m.provider_message_id OPERATOR(pg_catalog.=) e.provider_message_id);

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

CREATE OR REPLACE FUNCTION mailroom.changes_from_events() RETURNS trigger
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
        -- one index probe per event (outbox_provider_message_id; OFFSET 0: as above)
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
        -- Still no message with its provider id: a record that has not reached its trigger
        -- yet (it will wait for this lock, then read here), or mail mailroom did not send.
        -- Under the exclusive lock no provider id becomes visible between the two reads.
        INSERT INTO mailroom.changes_unmatched (event_id, provider_message_id)
        SELECT e.id, e.provider_message_id
        FROM changes_events AS e
        WHERE e.id OPERATOR(pg_catalog.=) ANY (unmatched)
          AND e.provider_message_id IS NOT NULL
          AND NOT EXISTS (SELECT FROM mailroom.outbox AS m
                          WHERE m.provider_message_id OPERATOR(pg_catalog.=) e.provider_message_id)
        ON CONFLICT DO NOTHING;
    END IF;
    IF apps IS NOT NULL THEN
        PERFORM mailroom.changes_wake(apps);
    END IF;
    RETURN NULL;
END
$$;
