-- One send-rate budget per SES account, shared by every replica: a token bucket in a row.
-- SES counts its quota in recipients, so callers reserve recipients, not calls.

CREATE TABLE mailroom.rate_buckets (
    name text PRIMARY KEY,
    tokens double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Reserve `wanted` tokens from a bucket refilling at `rate` per second up to `burst`; returns
-- how many seconds the caller must wait before using them (0: now). The balance may go
-- negative: that debt is the queue of reservations ahead, so concurrent callers across
-- replicas are spaced out exactly, with one row update per reservation.
CREATE FUNCTION mailroom.reserve_rate(bucket text, rate double precision,
                                      burst double precision, wanted double precision)
RETURNS double precision
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    balance double precision;
BEGIN
    INSERT INTO mailroom.rate_buckets AS b (name, tokens) VALUES (bucket, burst)
    ON CONFLICT (name) DO UPDATE
        SET tokens = least(burst, b.tokens
                       + rate * extract(epoch FROM clock_timestamp() - b.updated_at)),
            updated_at = clock_timestamp();
    UPDATE mailroom.rate_buckets SET tokens = tokens - wanted
    WHERE name = bucket RETURNING tokens INTO balance;
    RETURN greatest(0, -balance / rate);
END
$$;
REVOKE EXECUTE ON FUNCTION mailroom.reserve_rate(text, double precision, double precision,
                                                 double precision) FROM PUBLIC;

CREATE OR REPLACE FUNCTION mailroom.grant_roles() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'mailroom_app') THEN
        GRANT USAGE ON SCHEMA mailroom TO mailroom_app;
        GRANT EXECUTE ON FUNCTION
            mailroom.enqueue(text[], text, jsonb, text, text, text, bytea, text, text[], text[],
                             text[], text, smallint, timestamptz, text, integer, text),
            mailroom.message_status(bigint),
            mailroom.is_valid_address(text),
            mailroom.are_valid_addresses(text[])
        TO mailroom_app;
        IF to_regclass('mailroom.tokens') IS NOT NULL THEN
            GRANT SELECT, INSERT, UPDATE ON mailroom.accounts, mailroom.tokens TO mailroom_app;
            GRANT EXECUTE ON FUNCTION mailroom.new_token_secret(), mailroom.new_token_code()
                TO mailroom_app;
        END IF;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'mailroom_daemon') THEN
        GRANT USAGE ON SCHEMA mailroom TO mailroom_daemon;
        GRANT SELECT, UPDATE, DELETE ON mailroom.outbox TO mailroom_daemon;
        GRANT SELECT, INSERT, DELETE ON mailroom.attempts TO mailroom_daemon;
        GRANT SELECT ON mailroom.settings, mailroom.schema_migrations TO mailroom_daemon;
        GRANT SELECT, INSERT, UPDATE ON mailroom.rate_buckets TO mailroom_daemon;
        GRANT EXECUTE ON FUNCTION mailroom.is_valid_address(text),
            mailroom.are_valid_addresses(text[]),
            mailroom.reserve_rate(text, double precision, double precision, double precision)
            TO mailroom_daemon;
    END IF;
END
$$;
