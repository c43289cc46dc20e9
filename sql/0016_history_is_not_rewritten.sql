-- Two trust-boundary fixes (issue 18, finding 6 and item 4 in part):
--
-- 1. Who enqueued a message is a fact, not a field: `enqueued_by` scopes idempotency keys,
--    message_status() and cancel() to the enqueuing login role, so a role that could
--    rewrite it (the daemon and the operator hold UPDATE on the outbox) could hand a
--    message to another application or take one from it. No role may change it; the
--    trigger fires for the schema owner too (only ALTER TABLE ... DISABLE TRIGGER, a
--    deliberate act of the owner, gets past it).
--
-- 2. prune_events() never deletes inside the transient-bounce window. Suppression counts
--    transient bounces from the events kept (MAILROOM_SUPPRESS_TRANSIENT_WINDOW, 7 days by
--    default), so pruning younger events changes suppression decisions. The daemon's own
--    configuration already refuses a retention shorter than its window; this floor holds
--    against the daemon's role itself (a caller with a shorter keep_seconds is refused).
--    The floor is the default window: a longer configured window is kept by the daemon's
--    configuration check, which the database cannot see.

CREATE FUNCTION mailroom.outbox_enqueued_by_fixed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.enqueued_by IS DISTINCT FROM OLD.enqueued_by THEN
        RAISE EXCEPTION 'mailroom.outbox: enqueued_by is fixed at enqueue (message %)', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER outbox_enqueued_by_fixed BEFORE UPDATE OF enqueued_by ON mailroom.outbox
    FOR EACH ROW EXECUTE FUNCTION mailroom.outbox_enqueued_by_fixed();

CREATE OR REPLACE FUNCTION mailroom.prune_events(keep_seconds double precision, batch integer)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pruned bigint;
BEGIN
    -- NaN sorts above every number in PostgreSQL: the upper bound refuses it and infinity
    IF keep_seconds IS NULL OR NOT (keep_seconds >= 604800 AND keep_seconds <= 3153600000)
       OR batch IS NULL OR batch NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'mailroom.prune_events: keep_seconds must be at least 604800 (seven'
            ' days, the transient-bounce window) and at most 3153600000 (a century), and'
            ' batch 1 to 10000, got % and %',
            keep_seconds, batch
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

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
