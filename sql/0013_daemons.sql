-- Daemons visible in the database, and an index for pruning SES events.
--
-- Each `mailroom run` upserts one row about itself when it starts and at every gauge
-- refresh (15 s), and deletes it on a clean shutdown. `mailroom status` and the console
-- read them: a daemon in debug mode (sending nothing) or paused after an account-level
-- stop is visible to operators without reading its logs or metrics. A row not refreshed
-- for a few minutes belongs to a daemon that died or lost the database: shown as stale,
-- pruned by the next heartbeat of any daemon after a day.
--
-- No secrets here: the transport column holds the SES endpoint (user info and query
-- string removed) or the debug output path.

CREATE TABLE mailroom.daemons (
    worker text PRIMARY KEY,
    queue text NOT NULL,
    version text NOT NULL,
    mode text NOT NULL,
    transport text NOT NULL,
    started_at timestamptz NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    paused_until timestamptz,
    pause_reason text,
    send_rate text NOT NULL,
    send_rate_in_force float8,
    CONSTRAINT daemons_mode_known CHECK (mode IN ('ses', 'debug')),
    CONSTRAINT daemons_worker_at_most_200_chars CHECK (length(worker) <= 200),
    CONSTRAINT daemons_transport_at_most_500_chars CHECK (length(transport) <= 500),
    CONSTRAINT daemons_pause_reason_at_most_300_chars CHECK (length(pause_reason) <= 300)
);
-- `status --queue Q` lists one queue's daemons
CREATE INDEX daemons_by_queue ON mailroom.daemons (queue, worker);

-- ---------------------------------------------------------------- events retention
-- The daemon deletes events older than MAILROOM_RETENTION_EVENTS, oldest first, a batch
-- at a time: an index range from the oldest. On a very large events table create it
-- first with CREATE INDEX CONCURRENTLY (docs/cli.md, "Retention"); this then does nothing.
CREATE INDEX IF NOT EXISTS events_occurred_at ON mailroom.events (occurred_at);

-- The daemon may delete old events only: it has no DELETE on the table (history is not
-- its to rewrite), and this function refuses to delete anything younger than a day, so a
-- daemon's role cannot wipe the recent bounces that suppression counts. One batch of at
-- most `batch` rows, oldest first, rows another session holds skipped; returns how many.
-- MATERIALIZED: the LIMIT ... SKIP LOCKED subquery runs once (see prune_sent).
CREATE FUNCTION mailroom.prune_events(keep_seconds double precision, batch integer)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pruned bigint;
BEGIN
    IF keep_seconds IS NULL OR keep_seconds < 86400 OR batch IS NULL
       OR batch NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'mailroom.prune_events: keep_seconds must be at least 86400 (one day)'
            ' and batch 1 to 10000, got % and %', keep_seconds, batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH doomed AS MATERIALIZED (
        SELECT e.id
        FROM mailroom.events AS e
        WHERE e.occurred_at < pg_catalog.now() - pg_catalog.make_interval(secs => keep_seconds)
        ORDER BY e.occurred_at
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    ),
    deleted AS (
        DELETE FROM mailroom.events AS e
        USING doomed
        WHERE e.id = doomed.id
        RETURNING 1
    )
    SELECT pg_catalog.count(*) INTO pruned FROM deleted;
    RETURN pruned;
END
$$;

-- ---------------------------------------------------------------- grants
CREATE FUNCTION mailroom.grants_0013() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_daemon') THEN
        -- its own row (upsert, delete on shutdown; stale rows of dead daemons pruned;
        -- status may run as the daemon role too), and events retention
        GRANT SELECT, INSERT, UPDATE, DELETE ON mailroom.daemons TO mailroom_daemon;
        GRANT EXECUTE ON FUNCTION mailroom.prune_events(double precision, integer)
            TO mailroom_daemon;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_operator') THEN
        -- `mailroom status` and the console's overview: read only
        GRANT SELECT ON mailroom.daemons TO mailroom_operator;
    END IF;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
