-- Optional account lifecycle (the seed's schema): `mailroom migrate --with lifecycle`.
-- A provisioned account gets an activation token; every new token enqueues its email in
-- the same transaction; consuming an activation token activates the account.
-- The raw secret leaves the database only towards the daemon, which signs it at send time
-- (template data "$sign"); the outbox forgets it once the message is sent or dead.

CREATE TYPE mailroom.account_status AS ENUM ('provisioned', 'active', 'suspended');
CREATE TYPE mailroom.token_action AS ENUM ('activation', 'password_recovery');

CREATE TABLE mailroom.accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login text NOT NULL UNIQUE CONSTRAINT accounts_login_1_to_255_chars
        CHECK (length(login) BETWEEN 1 AND 255),
    email text NOT NULL UNIQUE CONSTRAINT accounts_email_must_be_ascii_user_at_domain
        CHECK (mailroom.is_valid_address(email)),
    status mailroom.account_status NOT NULL DEFAULT 'provisioned',
    created_at timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    suspended_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- 32 secret bytes from PostgreSQL's strong random source (gen_random_uuid, core since 13;
-- pgcrypto is not assumed): 244 random bits, the UUID version bits being fixed.
CREATE FUNCTION mailroom.new_token_secret() RETURNS bytea
LANGUAGE sql VOLATILE
SET search_path = pg_catalog
RETURN uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid());

-- Five decimal digits from the same source (2^32 mod 100000 makes the bias negligible).
CREATE FUNCTION mailroom.new_token_code() RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog
RETURN lpad((('x' || left(replace(gen_random_uuid()::text, '-', ''), 8))::bit(32)::bigint
             % 100000)::text, 5, '0');

CREATE TABLE mailroom.tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES mailroom.accounts (id) ON DELETE CASCADE,
    action mailroom.token_action NOT NULL,
    secret bytea NOT NULL UNIQUE DEFAULT mailroom.new_token_secret()
        CONSTRAINT tokens_secret_is_32_bytes CHECK (octet_length(secret) = 32),
    code text NOT NULL DEFAULT mailroom.new_token_code()
        CONSTRAINT tokens_code_is_5_digits CHECK (code ~ '^[0-9]{5}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL DEFAULT now() + interval '15 minutes',
    consumed_at timestamptz
);
CREATE INDEX tokens_by_account ON mailroom.tokens (account_id);

CREATE FUNCTION mailroom.account_provisioned() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    IF NEW.status = 'provisioned' THEN
        INSERT INTO mailroom.tokens (account_id, action) VALUES (NEW.id, 'activation');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER account_provisioned AFTER INSERT ON mailroom.accounts
    FOR EACH ROW EXECUTE FUNCTION mailroom.account_provisioned();

CREATE FUNCTION mailroom.account_status_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.status = 'active' AND OLD.status <> 'active' THEN
        NEW.activated_at := coalesce(NEW.activated_at, now());
    ELSIF NEW.status = 'suspended' AND OLD.status <> 'suspended' THEN
        NEW.suspended_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER account_status_changed BEFORE UPDATE ON mailroom.accounts
    FOR EACH ROW EXECUTE FUNCTION mailroom.account_status_changed();

-- Every new token is an email, in the same transaction. The daemon replaces "$sign" with
-- the signed token in the template data field it names ("secret").
CREATE FUNCTION mailroom.token_created() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
    account mailroom.accounts;
    data jsonb;
BEGIN
    SELECT * INTO account FROM mailroom.accounts WHERE id = NEW.account_id;
    data := jsonb_build_object(
        'login', account.login,
        '$sign', jsonb_build_object(
            'field', 'secret',
            'action', NEW.action::text,
            'secret', encode(NEW.secret, 'hex')
        )
    );
    IF NEW.action = 'password_recovery' THEN
        data := data || jsonb_build_object('code', NEW.code);
        data := jsonb_set(data, '{$sign,code}', to_jsonb(NEW.code));
    END IF;
    PERFORM mailroom.enqueue(
        to_addresses => ARRAY[account.email],
        template => CASE NEW.action WHEN 'activation' THEN 'activationv1'
                                    ELSE 'passwordrecoveryv1' END,
        template_data => data,
        idempotency_key => 'mailroom-token:' || NEW.id,
        priority => 10::smallint
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER token_created AFTER INSERT ON mailroom.tokens
    FOR EACH ROW EXECUTE FUNCTION mailroom.token_created();

CREATE FUNCTION mailroom.token_consumed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    IF NEW.action = 'activation' AND OLD.consumed_at IS NULL AND NEW.consumed_at IS NOT NULL THEN
        UPDATE mailroom.accounts SET status = 'active'
        WHERE id = NEW.account_id AND status = 'provisioned';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER token_consumed AFTER UPDATE OF consumed_at ON mailroom.tokens
    FOR EACH ROW EXECUTE FUNCTION mailroom.token_consumed();
