-- The operators' audit trail, and retention of cancelled messages.
--
-- Every operator action (cancel, send now, dead retry, dead purge; from the CLI or the
-- console) appends rows to mailroom.audit IN THE SAME STATEMENT that changes the messages:
-- a change without its record, or a record without its change, cannot commit. A bulk
-- action writes one row per batch; its batches share action_id. Rows are append-only for
-- mailroom_operator (INSERT and SELECT, no UPDATE or DELETE), and who acted is set by the
-- server (session_user), whatever the client sends; "operator" is the person the client
-- names ($USER, or the console's login) - informative, not proof.
--
-- No new index on the outbox's recipients or SES message ids: every outbox index is
-- updated by every claim and record (they are never HOT updates), and the operator's
-- searches are rare. On a large outbox, add them by hand if searches are slow
-- (docs/cli.md, "find"):
--   CREATE INDEX CONCURRENTLY outbox_provider_message_id ON mailroom.outbox (provider_message_id)
--       WHERE provider_message_id IS NOT NULL;

CREATE TABLE mailroom.audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action_id uuid NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL DEFAULT session_user,
    operator text,
    via text NOT NULL CONSTRAINT audit_via_known CHECK (via IN ('cli', 'web')),
    action text NOT NULL
        CONSTRAINT audit_action_known
        CHECK (action IN ('cancel', 'send_now', 'dead_retry', 'dead_purge')),
    messages integer NOT NULL DEFAULT 0,
    message_ids bigint[] NOT NULL,
    reason text CONSTRAINT audit_reason_at_most_500_chars CHECK (length(reason) <= 500),
    selection jsonb
);

COMMENT ON TABLE mailroom.audit IS
    'Operator actions on messages: who (session_user), when, what, how many, why.';

CREATE INDEX audit_message_ids ON mailroom.audit USING gin (message_ids);
CREATE INDEX audit_at ON mailroom.audit (at);

-- The server, not the client, says who and when; the count is the ids'.
CREATE FUNCTION mailroom.audit_stamp() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.actor := session_user;
    NEW.at := now();
    NEW.messages := coalesce(cardinality(NEW.message_ids), 0);
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_stamp BEFORE INSERT ON mailroom.audit
    FOR EACH ROW EXECUTE FUNCTION mailroom.audit_stamp();

-- Retention prunes cancelled messages as it prunes dead ones (by updated_at, the moment
-- they were cancelled); this partial index holds only them.
CREATE INDEX outbox_cancelled ON mailroom.outbox (queue, updated_at) WHERE status = 'cancelled';

-- The console's throughput chart and `mailroom stats` read the attempts of the last hours.
-- A BRIN index (attempts are appended in time order) costs the daemon's inserts next to
-- nothing, unlike a B-tree, and still spares those reads a scan of the whole history.
CREATE INDEX attempts_at ON mailroom.attempts USING brin (at);

CREATE FUNCTION mailroom.grants_0010() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_operator') THEN
        -- append-only: the operator writes its own records and reads all of them
        GRANT SELECT, INSERT ON mailroom.audit TO mailroom_operator;
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION mailroom.audit_stamp(), mailroom.grants_0010() FROM PUBLIC;
