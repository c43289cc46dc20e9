-- Token secrets reach only the daemon (issue 18, finding 1; see 0019_message_tokens.sql).
--
-- mailroom.tokens kept the raw secret and code, readable by every role that reads the
-- table. It now keeps only sha256(secret), for the lookup after the HMAC check (which
-- binds the code, so the code is not kept at all). A new token's secret and code are
-- drawn by the trigger, whatever the inserter supplied, and go to one place only:
-- mailroom.message_tokens, bound to the email's message id and to the account's address.
-- The email's template data holds the login alone; the daemon adds the signed token
-- ("secret") and the code ("code") at send time.

ALTER TABLE mailroom.tokens ADD COLUMN secret_hash bytea;
UPDATE mailroom.tokens SET secret_hash = pg_catalog.sha256(secret);
ALTER TABLE mailroom.tokens
    ALTER COLUMN secret_hash SET NOT NULL,
    ADD CONSTRAINT tokens_secret_hash_key UNIQUE (secret_hash),
    ADD CONSTRAINT tokens_secret_hash_is_32_bytes
        CHECK (pg_catalog.octet_length(secret_hash) OPERATOR(pg_catalog.=) 32),
    DROP COLUMN secret,
    DROP COLUMN code;

-- The email is enqueued before the row is stored (BEFORE INSERT: the raw secret exists
-- only inside this function); a failing insert takes the email and the token with it.
DROP TRIGGER token_created ON mailroom.tokens;

CREATE OR REPLACE FUNCTION mailroom.token_created() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    account mailroom.accounts;
    raw_secret bytea := mailroom.new_token_secret();
    raw_code text;
    data jsonb;
    template_name text;
    bound_to text;
    new_message bigint;
    same boolean;
BEGIN
    NEW.secret_hash := pg_catalog.sha256(raw_secret);
    SELECT * INTO account FROM mailroom.accounts AS a
    WHERE a.id OPERATOR(pg_catalog.=) NEW.account_id;
    IF NOT FOUND THEN
        RETURN NEW;  -- the foreign key refuses the row, naming it
    END IF;
    IF NEW.action OPERATOR(pg_catalog.=) 'password_recovery'::mailroom.token_action THEN
        raw_code := mailroom.new_token_code();
        template_name := 'passwordrecoveryv1';
    ELSE
        template_name := 'activationv1';
    END IF;
    data := pg_catalog.jsonb_build_object('login', account.login);
    bound_to := mailroom.normalize_address(mailroom.ses_address(account.email));
    new_message := mailroom.enqueue(
        to_addresses => ARRAY[account.email],
        template => template_name,
        template_data => data,
        idempotency_key => 'mailroom-token:' OPERATOR(pg_catalog.||) NEW.id::pg_catalog.text,
        priority => 10::smallint
    );
    -- the key may already name a message of the caller's (enqueue then returns it): a
    -- token is only ever bound to the email just made for it
    SELECT pg_catalog.cardinality(o.to_addresses) OPERATOR(pg_catalog.=) 1
           AND pg_catalog.cardinality(o.cc_addresses) OPERATOR(pg_catalog.=) 0
           AND pg_catalog.cardinality(o.bcc_addresses) OPERATOR(pg_catalog.=) 0
           AND mailroom.normalize_address(o.to_addresses[1]) OPERATOR(pg_catalog.=) bound_to
           AND o.template OPERATOR(pg_catalog.=) template_name
           AND o.template_data OPERATOR(pg_catalog.=) data
           AND o.status OPERATOR(pg_catalog.=) 'pending'
           AND NOT EXISTS (SELECT FROM mailroom.message_tokens AS t
                           WHERE t.message_id OPERATOR(pg_catalog.=) o.id)
    INTO same
    FROM mailroom.outbox AS o WHERE o.id OPERATOR(pg_catalog.=) new_message;
    IF NOT coalesce(same, false) THEN
        RAISE EXCEPTION 'idempotency key mailroom-token:% already names another message', NEW.id
            USING ERRCODE = 'unique_violation';
    END IF;
    INSERT INTO mailroom.message_tokens (message_id, recipient, template, action, field,
                                         secret, code)
    VALUES (new_message, bound_to, template_name, NEW.action::pg_catalog.text, 'secret',
            raw_secret, raw_code);
    RETURN NEW;
END
$$;

CREATE TRIGGER token_created BEFORE INSERT ON mailroom.tokens
    FOR EACH ROW EXECUTE FUNCTION mailroom.token_created();

-- an UPDATE cannot put a chosen hash in place of the drawn one
CREATE FUNCTION mailroom.token_hash_fixed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'a token''s secret_hash cannot be changed' USING ERRCODE = '55000';
END
$$;

CREATE TRIGGER token_hash_fixed BEFORE UPDATE OF secret_hash ON mailroom.tokens
    FOR EACH ROW WHEN (OLD.secret_hash IS DISTINCT FROM NEW.secret_hash)
    EXECUTE FUNCTION mailroom.token_hash_fixed();

REVOKE EXECUTE ON FUNCTION mailroom.token_created(), mailroom.token_hash_fixed() FROM PUBLIC;
