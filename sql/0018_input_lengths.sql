-- Lengths checked before conversion: an 8,000-character IDN label went through
-- mailroom.punycode (quadratic in the label's length) for 18 s of CPU before the outbox's
-- length CHECK refused the result. Punycode never makes a label shorter, so a domain over
-- 253 characters or a label over 63 cannot convert to a valid one: refused first.
--
-- The functions are wrapped, not rewritten: the conversion keeps whatever body earlier
-- migrations gave it (renamed *_unguarded, keeping its grants), and the guard takes its
-- name, so every caller (ascii_domain, ses_address, the outbox trigger) goes through it.

ALTER FUNCTION mailroom.punycode(text) RENAME TO punycode_unguarded;
ALTER FUNCTION mailroom.ascii_domain(text) RENAME TO ascii_domain_unguarded;

-- A label longer than 63 characters is an error here (ascii_domain refuses it before).
CREATE FUNCTION mailroom.punycode(label text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.char_length(label) OPERATOR(pg_catalog.>) 63 THEN
        RAISE EXCEPTION 'a domain label is at most 63 characters'
            USING ERRCODE = '22023';
    END IF;
    RETURN mailroom.punycode_unguarded(label);
END
$$;

-- NULL (cannot be converted: the validation refuses the address) for an over-long domain
-- or label, before any normalisation or conversion.
CREATE FUNCTION mailroom.ascii_domain(domain text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.char_length(domain) OPERATOR(pg_catalog.>) 253
       OR domain OPERATOR(pg_catalog.~) '[^.]{64}' THEN
        RETURN NULL;
    END IF;
    RETURN mailroom.ascii_domain_unguarded(domain);
END
$$;

REVOKE EXECUTE ON FUNCTION mailroom.punycode(text), mailroom.ascii_domain(text) FROM PUBLIC;

-- whoever writes an outbox row runs the conversion (as 0012 grants the wrappers' names)
CREATE FUNCTION mailroom.grants_0018() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    role text;
BEGIN
    FOREACH role IN ARRAY ARRAY['mailroom_app', 'mailroom_daemon', 'mailroom_operator'] LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) role) THEN
            EXECUTE pg_catalog.format(
                'GRANT EXECUTE ON FUNCTION mailroom.punycode_unguarded(text),'
                ' mailroom.ascii_domain_unguarded(text) TO %I', role);
        END IF;
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION mailroom.grants_0018() FROM PUBLIC;
