-- A message's delivery state reads only the events of its own recipients (issue 19,
-- item 3). Before, any event naming the message's SES MessageId counted: one naming a
-- stranger, or the recipient of another message, marked the message bounced with the
-- event's text. events_ingest now stores events for our messages only for their
-- recipients; this also keeps out the rows stored before it did.
--
-- Same signature and result: CREATE OR REPLACE keeps the grants of 0009.
CREATE OR REPLACE FUNCTION mailroom.delivery_summary(
    status text, provider_message_id text, last_error text, updated_at timestamptz,
    sent_at timestamptz
) RETURNS TABLE (delivery_state text, delivery_at timestamptz, delivery_reason text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH recipients AS (
        -- the addresses the message was sent to, in the form events are stored in
        SELECT mailroom.normalize_address(a) AS recipient
        FROM mailroom.outbox AS o
        CROSS JOIN LATERAL pg_catalog.unnest(
            o.to_addresses OPERATOR(pg_catalog.||) o.cc_addresses
            OPERATOR(pg_catalog.||) o.bcc_addresses) AS a
        WHERE o.provider_message_id OPERATOR(pg_catalog.=) delivery_summary.provider_message_id
    ),
    per_recipient AS (
        SELECT DISTINCT ON (e.recipient) e.event_type, e.subtype, e.detail, e.occurred_at,
               CASE e.event_type
                   WHEN 'Complaint' THEN 6 WHEN 'Bounce' THEN 5
                   WHEN 'Reject' THEN 4 WHEN 'RenderingFailure' THEN 4
                   WHEN 'Delivery' THEN 3 WHEN 'Open' THEN 3 WHEN 'Click' THEN 3
                   WHEN 'DeliveryDelay' THEN 2 WHEN 'Send' THEN 1 ELSE 0
               END AS rank
        FROM mailroom.events AS e
        WHERE e.provider_message_id OPERATOR(pg_catalog.=) delivery_summary.provider_message_id
          AND delivery_summary.provider_message_id IS NOT NULL
          AND e.recipient IN (SELECT r.recipient FROM recipients AS r)
        -- a delivery says more than the opens and clicks that imply it
        ORDER BY e.recipient, rank DESC, e.event_type OPERATOR(pg_catalog.=) 'Delivery' DESC,
                 e.occurred_at DESC
    ),
    worst AS (
        SELECT r.*,
               CASE r.rank WHEN 6 THEN 'complained' WHEN 5 THEN 'bounced' WHEN 4 THEN 'dead'
                   WHEN 3 THEN 'delivered' WHEN 2 THEN 'delayed' ELSE 'sent' END AS state
        FROM per_recipient AS r
        -- complained, bounced, dead, delayed (not yet delivered), delivered, sent
        ORDER BY CASE r.rank WHEN 2 THEN 3.5 ELSE r.rank END DESC,
                 r.event_type OPERATOR(pg_catalog.=) 'Delivery' DESC, r.occurred_at DESC
        LIMIT 1
    )
    SELECT
        CASE WHEN status IN ('pending', 'retrying', 'sending') THEN 'pending'
             WHEN status IN ('dead', 'cancelled') THEN status
             ELSE coalesce((SELECT w.state FROM worst AS w), 'sent') END,
        CASE WHEN status OPERATOR(pg_catalog.=) 'sent'
                 THEN coalesce((SELECT w.occurred_at FROM worst AS w
                                WHERE w.rank OPERATOR(pg_catalog.>) 1), sent_at)
             ELSE updated_at END,
        CASE WHEN status OPERATOR(pg_catalog.=) 'sent' THEN (
                 SELECT w.event_type
                        OPERATOR(pg_catalog.||) coalesce(' ' OPERATOR(pg_catalog.||)
                            nullif(w.subtype, ''), '')
                        OPERATOR(pg_catalog.||) coalesce(': ' OPERATOR(pg_catalog.||) w.detail, '')
                 FROM worst AS w WHERE w.rank OPERATOR(pg_catalog.>) 1)
             WHEN status IN ('dead', 'cancelled') THEN last_error END
$$;
