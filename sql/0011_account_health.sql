-- Account health and per-recipient caps (issue 13, items 4 and 5).
--
-- 1. recipient_sends: which recipient was handed which message, and when, so that a
--    per-recipient cap (a password-reset button pressed 50 times) can be decided with one
--    query per batch, across replicas. Only written when caps are configured.
-- 2. rate_buckets gains the shared rate controller: the SES quota read from GetAccount
--    (MAILROOM_SEND_RATE=auto), an AIMD factor that every replica follows after a
--    throttle, and the day's sending against Max24HourSend.
--
-- No function here is SECURITY DEFINER: the daemon acts within its table grants.

-- ---------------------------------------------------------------- per-recipient caps
-- The address is kept as a hash of its lower-cased form: the outbox already holds the
-- address, this table needs only to recognise it, not to be another copy of it.
CREATE TABLE mailroom.recipient_sends (
    address_key uuid NOT NULL,
    message_id bigint NOT NULL,
    template text NOT NULL,  -- template name, or simple / raw (the metrics' label)
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, address_key)  -- a retried message counts once
);
-- The per-batch count: the batch's addresses, the newest rows within the longest window.
CREATE INDEX recipient_sends_by_address ON mailroom.recipient_sends (address_key, at);
-- Pruning by age: rows arrive in time order, so a BRIN index is tiny and enough.
CREATE INDEX recipient_sends_by_time ON mailroom.recipient_sends USING brin (at);

CREATE FUNCTION mailroom.recipient_key(address text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.md5(pg_catalog.lower(address))::uuid;

-- ---------------------------------------------------------------- shared rate control
ALTER TABLE mailroom.rate_buckets
    ADD COLUMN factor double precision NOT NULL DEFAULT 1
        CONSTRAINT rate_buckets_factor_in_0_1 CHECK (factor > 0 AND factor <= 1),
    ADD COLUMN cut_at timestamptz,             -- last multiplicative decrease
    ADD COLUMN quota_rate double precision,    -- GetAccount SendQuota.MaxSendRate
    ADD COLUMN day_quota double precision,     -- SendQuota.Max24HourSend (<= 0: none)
    ADD COLUMN day_sent double precision NOT NULL DEFAULT 0,  -- SentLast24Hours + since
    ADD COLUMN quota_read_at timestamptz;

-- The AIMD factor now: the last one, grown by `recovery` per second since the last cut.
CREATE FUNCTION mailroom.rate_factor(factor double precision, cut_at timestamptz,
                                     recovery double precision)
RETURNS double precision
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN cut_at IS NULL THEN 1.0
            ELSE least(1.0, factor + recovery * greatest(0.0,
                     extract(epoch FROM clock_timestamp() - cut_at)::double precision))
       END;

-- Reserve `wanted` recipients from the shared budget; returns the seconds to wait before
-- sending them, or infinity (nothing reserved) when the day's quota, less `margin` (a
-- fraction of it), would be exceeded: the caller pauses instead of hitting the quota.
-- With `auto`, the rate is the quota read from SES (`rate` until one was read); without,
-- it is `rate`. Either way it is scaled by the AIMD factor. `burst` <= 0: one second's
-- worth of the current rate.
CREATE FUNCTION mailroom.reserve_send(bucket text, rate double precision,
                                      burst double precision, wanted double precision,
                                      auto boolean, margin double precision,
                                      recovery double precision)
RETURNS double precision
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b mailroom.rate_buckets;
    effective double precision;
    ceiling double precision;
    balance double precision;
BEGIN
    INSERT INTO mailroom.rate_buckets (name, tokens)
    VALUES (bucket, greatest(burst, rate, 1.0))
    ON CONFLICT (name) DO NOTHING;
    SELECT * INTO b FROM mailroom.rate_buckets WHERE name = bucket FOR UPDATE;
    IF auto AND wanted > 0 AND b.day_quota > 0
       AND b.day_sent + wanted > b.day_quota * (1.0 - margin) THEN
        RETURN 'Infinity'::double precision;
    END IF;
    effective := (CASE WHEN auto THEN coalesce(b.quota_rate, rate) ELSE rate END)
                 * mailroom.rate_factor(b.factor, b.cut_at, recovery);
    IF effective <= 0 THEN  -- no rate limit: only the day's count is kept
        UPDATE mailroom.rate_buckets SET day_sent = greatest(0.0, day_sent + wanted)
        WHERE name = bucket;
        RETURN 0;
    END IF;
    ceiling := CASE WHEN burst > 0 THEN burst ELSE greatest(effective, 1.0) END;
    UPDATE mailroom.rate_buckets
    SET tokens = least(ceiling, tokens + effective
                       * extract(epoch FROM clock_timestamp() - updated_at)::double precision)
                 - wanted,
        updated_at = clock_timestamp(),
        day_sent = greatest(0.0, day_sent + wanted)
    WHERE name = bucket
    RETURNING tokens INTO balance;
    RETURN greatest(0.0, -balance / effective);
END
$$;

-- SES throttled a call: cut the shared rate by `decrease` (never below `floor`), and
-- empty the bucket so the burst that caused it stops. One cut per `cooldown` seconds, so
-- that the replicas throttled by the same burst do not each cut it again. Returns the new
-- factor, or NULL when another cut was recent enough.
CREATE FUNCTION mailroom.rate_throttled(bucket text, decrease double precision,
                                        floor double precision, recovery double precision,
                                        cooldown double precision)
RETURNS double precision
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cut double precision;
BEGIN
    INSERT INTO mailroom.rate_buckets (name, tokens) VALUES (bucket, 0)
    ON CONFLICT (name) DO NOTHING;
    UPDATE mailroom.rate_buckets
    SET factor = least(1.0, greatest(floor,
                     mailroom.rate_factor(factor, cut_at, recovery) * decrease)),
        cut_at = clock_timestamp(),
        tokens = least(tokens, 0.0)
    WHERE name = bucket
      AND (cut_at IS NULL
           OR cut_at <= clock_timestamp() - make_interval(secs => cooldown))
    RETURNING factor INTO cut;
    RETURN cut;
END
$$;

-- What GetAccount said: the rate and the day's quota, and SentLast24Hours, which replaces
-- the count kept since the last read.
CREATE FUNCTION mailroom.rate_quota(bucket text, max_rate double precision,
                                    max_24h double precision, sent_24h double precision)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO mailroom.rate_buckets AS b
        (name, tokens, quota_rate, day_quota, day_sent, quota_read_at)
    VALUES (bucket, greatest(max_rate, 1.0), max_rate, max_24h, sent_24h, clock_timestamp())
    ON CONFLICT (name) DO UPDATE
        SET quota_rate = excluded.quota_rate, day_quota = excluded.day_quota,
            day_sent = excluded.day_sent, quota_read_at = excluded.quota_read_at;
END;

-- ---------------------------------------------------------------- grants
CREATE FUNCTION mailroom.grants_0011() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_daemon') THEN
        GRANT SELECT, INSERT, DELETE ON mailroom.recipient_sends TO mailroom_daemon;
        GRANT EXECUTE ON FUNCTION
            mailroom.recipient_key(text),
            mailroom.rate_factor(double precision, timestamptz, double precision),
            mailroom.reserve_send(text, double precision, double precision, double precision,
                                  boolean, double precision, double precision),
            mailroom.rate_throttled(text, double precision, double precision,
                                    double precision, double precision),
            mailroom.rate_quota(text, double precision, double precision, double precision)
        TO mailroom_daemon;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_operator') THEN
        -- to see the shared rate and the caps' counts; DELETE lifts a recipient's cap
        GRANT SELECT ON mailroom.rate_buckets TO mailroom_operator;
        GRANT SELECT, DELETE ON mailroom.recipient_sends TO mailroom_operator;
        GRANT EXECUTE ON FUNCTION
            mailroom.recipient_key(text),
            mailroom.rate_factor(double precision, timestamptz, double precision)
        TO mailroom_operator;
    END IF;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
