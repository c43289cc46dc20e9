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

-- ---------------------------------------------------------------- grants
CREATE FUNCTION mailroom.grants_0013() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_daemon') THEN
        -- its own row (upsert, delete on shutdown; stale rows of dead daemons pruned), and
        -- events retention; status may run as the daemon role too
        GRANT SELECT, INSERT, UPDATE, DELETE ON mailroom.daemons TO mailroom_daemon;
        GRANT DELETE ON mailroom.events TO mailroom_daemon;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_operator') THEN
        -- `mailroom status` and the console's overview: read only
        GRANT SELECT ON mailroom.daemons TO mailroom_operator;
    END IF;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
