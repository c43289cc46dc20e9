-- Deliverability: SES events per recipient, each message's delivery state, and the
-- suppression list that keeps bounced and complaining addresses out of every call.
--
-- Events are correlated with messages through the SES MessageId recorded at send
-- (outbox.provider_message_id), at read time: an event may arrive before its message's
-- outcome is recorded, or belong to mail something else sent; either way it is kept, and
-- it still feeds the suppression list.

-- ---------------------------------------------------------------- correlation
CREATE INDEX outbox_provider_message_id ON mailroom.outbox (provider_message_id)
    WHERE provider_message_id IS NOT NULL;

-- ---------------------------------------------------------------- addresses
-- The form suppression compares: the addr-spec of "Name <addr>" (or the bare address),
-- trimmed and lower-cased. mailroom.suppression.normalize_address is the Python twin.
CREATE FUNCTION mailroom.normalize_address(address text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN lower(btrim(coalesce(substring(address FROM '<([^<>]*)>\s*$'), address)));

-- ---------------------------------------------------------------- events
-- One row per SES event and recipient: no bodies, no links, no IP addresses.
-- event_key identifies the event itself (not its envelope): SQS redeliveries, two
-- replicas receiving the same event, or one event reaching the queue through both SNS
-- and EventBridge all land on one row.
CREATE TABLE mailroom.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_key text NOT NULL,
    provider_message_id text,
    recipient text NOT NULL,
    event_type text NOT NULL,
    subtype text NOT NULL DEFAULT '',
    detail text,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_key_unique UNIQUE (event_key),
    CONSTRAINT events_type_known CHECK (event_type IN (
        'Send', 'Delivery', 'Bounce', 'Complaint', 'Reject', 'DeliveryDelay',
        'RenderingFailure', 'Open', 'Click', 'Subscription')),
    CONSTRAINT events_recipient_normalized CHECK (recipient = lower(recipient)),
    CONSTRAINT events_detail_at_most_1000_chars CHECK (length(detail) <= 1000)
);
CREATE INDEX events_provider_message_id ON mailroom.events (provider_message_id);
-- transient bounces of one address within the window (the suppression rule)
CREATE INDEX events_bounces_by_recipient ON mailroom.events (recipient, occurred_at)
    WHERE event_type = 'Bounce';

-- ---------------------------------------------------------------- suppression list
CREATE TABLE mailroom.suppressions (
    address text PRIMARY KEY,
    reason text NOT NULL,
    detail text,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL DEFAULT session_user,
    CONSTRAINT suppressions_address_normalized
        CHECK (address = mailroom.normalize_address(address) AND address LIKE '%_@_%'),
    CONSTRAINT suppressions_reason_known
        CHECK (reason IN ('bounce', 'complaint', 'transient_bounces', 'manual', 'ses_import')),
    CONSTRAINT suppressions_detail_at_most_1000_chars CHECK (length(detail) <= 1000)
);
CREATE INDEX suppressions_by_reason ON mailroom.suppressions (reason, created_at);

-- ---------------------------------------------------------------- delivery state
-- A message's delivery state, from its outbox status and its events. Per recipient the
-- most final event counts (a complaint after a delivery, a delivery after a delay: order
-- of arrival does not matter); the message then shows its worst recipient.
CREATE FUNCTION mailroom.delivery_summary(
    status text, provider_message_id text, last_error text, updated_at timestamptz,
    sent_at timestamptz
) RETURNS TABLE (delivery_state text, delivery_at timestamptz, delivery_reason text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH per_recipient AS (
        SELECT DISTINCT ON (e.recipient) e.event_type, e.subtype, e.detail, e.occurred_at,
               CASE e.event_type
                   WHEN 'Complaint' THEN 6 WHEN 'Bounce' THEN 5
                   WHEN 'Reject' THEN 4 WHEN 'RenderingFailure' THEN 4
                   WHEN 'Delivery' THEN 3 WHEN 'Open' THEN 3 WHEN 'Click' THEN 3
                   WHEN 'DeliveryDelay' THEN 2 WHEN 'Send' THEN 1 ELSE 0
               END AS rank
        FROM mailroom.events AS e
        WHERE e.provider_message_id = delivery_summary.provider_message_id
          AND delivery_summary.provider_message_id IS NOT NULL
        -- a delivery says more than the opens and clicks that imply it
        ORDER BY e.recipient, rank DESC, e.event_type = 'Delivery' DESC, e.occurred_at DESC
    ),
    worst AS (
        SELECT r.*,
               CASE r.rank WHEN 6 THEN 'complained' WHEN 5 THEN 'bounced' WHEN 4 THEN 'dead'
                   WHEN 3 THEN 'delivered' WHEN 2 THEN 'delayed' ELSE 'sent' END AS state
        FROM per_recipient AS r
        -- complained, bounced, dead, delayed (not yet delivered), delivered, sent
        ORDER BY CASE r.rank WHEN 2 THEN 3.5 ELSE r.rank END DESC,
                 r.event_type = 'Delivery' DESC, r.occurred_at DESC
        LIMIT 1
    )
    SELECT
        CASE WHEN status IN ('pending', 'retrying', 'sending') THEN 'pending'
             WHEN status IN ('dead', 'cancelled') THEN status
             ELSE coalesce((SELECT w.state FROM worst AS w), 'sent') END,
        CASE WHEN status = 'sent'
                 THEN coalesce((SELECT w.occurred_at FROM worst AS w WHERE w.rank > 1), sent_at)
             ELSE updated_at END,
        CASE WHEN status = 'sent' THEN (
                 SELECT w.event_type || coalesce(' ' || nullif(w.subtype, ''), '')
                        || coalesce(': ' || w.detail, '')
                 FROM worst AS w WHERE w.rank > 1)
             WHEN status IN ('dead', 'cancelled') THEN last_error END
$$;

-- An application reads the status of the messages it enqueued, and of no other; now with
-- the delivery state (result columns changed: drop and create).
DROP FUNCTION mailroom.message_status(bigint);
CREATE FUNCTION mailroom.message_status(message_id bigint)
RETURNS TABLE (status text, attempts integer, created_at timestamptz, sent_at timestamptz,
               provider_message_id text, delivery_state text, delivery_at timestamptz,
               delivery_reason text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.status, o.attempts, o.created_at, o.sent_at, o.provider_message_id,
           d.delivery_state, d.delivery_at, d.delivery_reason
    FROM mailroom.outbox AS o
    CROSS JOIN LATERAL mailroom.delivery_summary(o.status, o.provider_message_id,
                                                 o.last_error, o.updated_at, o.sent_at) AS d
    WHERE o.id = message_id AND o.enqueued_by = session_user
$$;

-- "this address bounced": for a sign-up form. Says only yes or no, never why or when.
CREATE FUNCTION mailroom.is_suppressed(address text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT FROM mailroom.suppressions AS s
        WHERE s.address = mailroom.normalize_address(is_suppressed.address)
    )
$$;

-- ---------------------------------------------------------------- grants
CREATE FUNCTION mailroom.grants_0009() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_app') THEN
        GRANT EXECUTE ON FUNCTION mailroom.message_status(bigint),
            mailroom.is_suppressed(text), mailroom.normalize_address(text)
        TO mailroom_app;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_daemon') THEN
        -- ingest events (insert only: history is not the daemon's to rewrite), read the
        -- suppression list before each call and add to it from bounces and complaints
        GRANT SELECT, INSERT ON mailroom.events TO mailroom_daemon;
        GRANT SELECT, INSERT ON mailroom.suppressions TO mailroom_daemon;
        GRANT EXECUTE ON FUNCTION mailroom.normalize_address(text) TO mailroom_daemon;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_operator') THEN
        -- `mailroom show` (event history), `mailroom suppression list | add | remove | import`
        GRANT SELECT ON mailroom.events TO mailroom_operator;
        GRANT SELECT, INSERT, DELETE ON mailroom.suppressions TO mailroom_operator;
        GRANT EXECUTE ON FUNCTION mailroom.message_status(bigint),
            mailroom.is_suppressed(text), mailroom.normalize_address(text),
            mailroom.delivery_summary(text, text, text, timestamptz, timestamptz)
        TO mailroom_operator;
    END IF;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
