-- 0033: the changes feed's outbox trigger (0030) costs the claim nothing (issue 21).
--
-- The trigger runs after every UPDATE statement on the outbox, the daemon's claim
-- included: each claim joined its 500 new rows to the old ones to insert no change,
-- looked for provider ids it had not set, and called changes_wake() with no application
-- (0.05 ms). Measured with pg_stat_statements over idle sends, the claim went from 0.20 ms
-- (9fb73c5) to 0.37 ms, and a claim + record loop of 500-message batches ran ~2 % slower
-- (bench/costs.py). Now the function returns at once when no new row is sent, dead or
-- cancelled and none has a provider id: exactly the statements in which neither writer
-- below could write a row. The rest of the body is 0030's, unchanged but for the wake-up,
-- which is skipped when no application has a change. CREATE OR REPLACE keeps the owner,
-- SECURITY DEFINER, the grants and the trigger.

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
    -- a provider id set by this statement: the events stored before it (see 0030)
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
    IF apps IS NOT NULL THEN  -- no change, no one to wake
        PERFORM mailroom.changes_wake(apps);
    END IF;
    RETURN NULL;
END
$$;
