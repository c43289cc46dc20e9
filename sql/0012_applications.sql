-- Applications: display names and internationalised domains in addresses, converted to the
-- form SES v2 takes on the way in (so every reader of the outbox sees one form); an
-- application's own cancel.
--
-- The same conversion exists in Python (mailroom/addresses.py) for the helper and the Django
-- backend; tests/test_addresses.py compares the two on generated input.

-- ---------------------------------------------------------------- punycode (RFC 3492)
-- One label, without its "xn--" prefix.
CREATE FUNCTION mailroom.punycode(label text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cps integer[] := ARRAY(SELECT pg_catalog.ascii(c)
                           FROM pg_catalog.regexp_split_to_table(label, '') WITH ORDINALITY
                                AS t(c, i)
                           ORDER BY i);
    total integer := pg_catalog.cardinality(cps);
    output text := '';
    n bigint := 128;
    delta bigint := 0;
    bias bigint := 72;
    basic integer;
    h integer;
    m bigint;
    q bigint;
    k bigint;
    t bigint;
    d bigint;
    c integer;
BEGIN
    FOREACH c IN ARRAY cps LOOP
        IF c < 128 THEN
            output := output || pg_catalog.chr(c);
        END IF;
    END LOOP;
    basic := pg_catalog.length(output);
    h := basic;
    IF basic > 0 THEN
        output := output || '-';
    END IF;
    WHILE h < total LOOP
        SELECT min(x) INTO m FROM pg_catalog.unnest(cps) AS u(x) WHERE x >= n;
        delta := delta + (m - n) * (h + 1);
        n := m;
        FOREACH c IN ARRAY cps LOOP
            IF c < n THEN
                delta := delta + 1;
            ELSIF c = n THEN
                q := delta;
                k := 36;
                LOOP
                    t := CASE WHEN k <= bias THEN 1 WHEN k >= bias + 26 THEN 26 ELSE k - bias END;
                    EXIT WHEN q < t;
                    d := t + (q - t) % (36 - t);
                    output := output || pg_catalog.chr((CASE WHEN d < 26 THEN 97 ELSE 22 END + d)::integer);
                    q := (q - t) / (36 - t);
                    k := k + 36;
                END LOOP;
                output := output || pg_catalog.chr((CASE WHEN q < 26 THEN 97 ELSE 22 END + q)::integer);
                -- adapt the bias (RFC 3492 section 6.1)
                delta := CASE WHEN h = basic THEN delta / 700 ELSE delta / 2 END;
                delta := delta + delta / (h + 1);
                k := 0;
                WHILE delta > 455 LOOP
                    delta := delta / 35;
                    k := k + 36;
                END LOOP;
                bias := k + (36 * delta) / (delta + 38);
                delta := 0;
                h := h + 1;
            END IF;
        END LOOP;
        delta := delta + 1;
        n := n + 1;
    END LOOP;
    RETURN output;
END
$$;

-- ---------------------------------------------------------------- domains and names
-- A domain as DNS and SES take it, or NULL when it cannot be converted faithfully (see
-- mailroom/addresses.py for the rules; the character class is the same).
-- Lower case as the database's collation gives it: any UTF-8 collation (libc, ICU,
-- builtin C.UTF-8) lowers non-ASCII capitals; under plain "C" they stay as written.
CREATE FUNCTION mailroom.ascii_domain(domain text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lowered text;
    labels text[] := '{}';
    label text;
BEGIN
    IF domain ~ '^[\x01-\x7f]*$' THEN
        RETURN domain;
    END IF;
    lowered := normalize(pg_catalog.lower(domain), NFC);
    IF pg_catalog.strpos(domain, U&'\0130') > 0
       OR normalize(lowered, NFKC) <> lowered
       OR lowered ~ U&'[\0001-\002c\002f\003a-\0060\007b-\00a0\00ad\00df\0130\034f\03c2\061c\115f\1160\1680\1806\180b-\180f\2000-\200f\2028-\202f\205f-\206f\3000\3164\e000-\f8ff\fe00-\fe0f\feff\fff0-\ffff\+0e0000-\+10ffff]'
    THEN
        RETURN NULL;
    END IF;
    FOREACH label IN ARRAY pg_catalog.string_to_array(lowered, '.') LOOP
        IF label ~ '^[\x01-\x7f]*$' THEN
            labels := labels || label;
        ELSE
            labels := labels || ('xn--' || mailroom.punycode(label));
        END IF;
    END LOOP;
    RETURN pg_catalog.array_to_string(labels, '.');
END
$$;

-- RFC 2047 "B" encoded words for a display name, at most 45 bytes of UTF-8 each (every
-- word stays under 75 characters), split on character boundaries.
CREATE FUNCTION mailroom.encoded_words(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    words text[] := '{}';
    chunk bytea := '';
    data bytea;
    ch text;
BEGIN
    FOR ch IN SELECT c FROM pg_catalog.regexp_split_to_table(name, '') WITH ORDINALITY AS t(c, i)
              ORDER BY i LOOP
        data := pg_catalog.convert_to(ch, 'UTF8');
        IF pg_catalog.octet_length(chunk) > 0
           AND pg_catalog.octet_length(chunk) + pg_catalog.octet_length(data) > 45 THEN
            words := words || ('=?UTF-8?B?' || pg_catalog.encode(chunk, 'base64') || '?=');
            chunk := '';
        END IF;
        chunk := chunk || data;
    END LOOP;
    words := words || ('=?UTF-8?B?' || pg_catalog.encode(chunk, 'base64') || '?=');
    RETURN pg_catalog.array_to_string(words, ' ');
END
$$;

-- An address as SES takes it: display name quoted (or RFC 2047 encoded), IDN domain in
-- punycode. What cannot be converted is returned unchanged, for the validation to refuse.
CREATE FUNCTION mailroom.ses_address(address text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ws constant text := E' \t\n\r\x0b\x0c';
    trimmed text := pg_catalog.btrim(address, ws);
    parts text[];
    name text;
    spec text;
    domain text;
BEGIN
    parts := pg_catalog.regexp_match(trimmed, '^(.*)<([^<>]*)>$');
    IF parts IS NULL THEN
        name := NULL;
        spec := trimmed;
    ELSE
        name := pg_catalog.btrim(parts[1], ws);
        spec := pg_catalog.btrim(parts[2], ws);
        IF pg_catalog.length(name) >= 2 AND name LIKE '"%"' THEN
            name := pg_catalog.btrim(pg_catalog.regexp_replace(
                pg_catalog.substr(name, 2, pg_catalog.length(name) - 2), '\\(.)', '\1', 'g'), ws);
        END IF;
        IF name ~ '[\x01-\x1f\x7f]' THEN
            RETURN trimmed;  -- a line break in a header is an injection: refused
        END IF;
    END IF;
    IF pg_catalog.strpos(spec, '@') > 0 THEN
        domain := substring(spec FROM '@([^@]*)$');
        domain := mailroom.ascii_domain(domain);
        IF domain IS NOT NULL THEN
            spec := substring(spec FROM '^(.*)@[^@]*$') || '@' || domain;
        END IF;
    END IF;
    IF name IS NULL OR name = '' THEN
        RETURN spec;
    ELSIF name ~ '^=\?UTF-8\?B\?[A-Za-z0-9+/]+={0,2}\?=( =\?UTF-8\?B\?[A-Za-z0-9+/]+={0,2}\?=)*$' THEN
        RETURN name || ' <' || spec || '>';  -- already encoded words: converting twice is a no-op
    ELSIF name ~ '^[\x01-\x7f]*$' THEN
        RETURN '"' || pg_catalog.replace(pg_catalog.replace(name, '\', '\\'), '"', '\"')
               || '" <' || spec || '>';
    END IF;
    RETURN mailroom.encoded_words(normalize(name, NFC)) || ' <' || spec || '>';
END
$$;

CREATE FUNCTION mailroom.ses_addresses(addresses text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN ARRAY(SELECT mailroom.ses_address(a)
             FROM pg_catalog.unnest(addresses) WITH ORDINALITY AS t(a, i) ORDER BY i);

-- Runs before outbox_validate (triggers fire in name order), on direct INSERTs too.
CREATE FUNCTION mailroom.outbox_addresses_ses_form() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the common case, plain ASCII addresses, costs one match over all of them
    IF pg_catalog.concat_ws(',', NEW.from_address, NEW.to_addresses::text, NEW.cc_addresses::text,
                            NEW.bcc_addresses::text, NEW.reply_to_addresses::text)
       !~ '[^\x21-\x7e]|[<]' THEN
        RETURN NEW;
    END IF;
    NEW.from_address := mailroom.ses_address(NEW.from_address);
    NEW.to_addresses := mailroom.ses_addresses(NEW.to_addresses);
    NEW.cc_addresses := mailroom.ses_addresses(NEW.cc_addresses);
    NEW.bcc_addresses := mailroom.ses_addresses(NEW.bcc_addresses);
    NEW.reply_to_addresses := mailroom.ses_addresses(NEW.reply_to_addresses);
    RETURN NEW;
END
$$;

CREATE TRIGGER outbox_addresses_ses_form
    BEFORE INSERT OR UPDATE OF from_address, to_addresses, cc_addresses, bcc_addresses,
        reply_to_addresses
    ON mailroom.outbox
    FOR EACH ROW EXECUTE FUNCTION mailroom.outbox_addresses_ses_form();

-- The address part alone (suppression lists, comparisons): 'Ann <a@x.org>' -> 'a@x.org'.
CREATE FUNCTION mailroom.bare_address(address text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.btrim(coalesce(substring(address FROM '<([^<>]*)>[ \t\n\r]*$'),
                                 address), E' \t\n\r\x0b\x0c');

-- Valid: a bare address (the rules of 0008), or a display name in the form ses_address()
-- writes (a quoted string of printable ASCII, or RFC 2047 "B" words) before <address>.
CREATE FUNCTION mailroom.is_valid_addr_spec(address text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN address IS NOT NULL
   AND octet_length(address) <= 320
   AND octet_length(split_part(address, '@', 1)) <= 64
   AND address ~ '^[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$';

CREATE OR REPLACE FUNCTION mailroom.is_valid_address(address text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN address IS NOT NULL
   AND CASE
       WHEN strpos(address, '<') = 0 THEN mailroom.is_valid_addr_spec(address)
       ELSE octet_length(address) <= 998
            AND address ~ '^("([\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"|=\?UTF-8\?B\?[A-Za-z0-9+/]+={0,2}\?=( =\?UTF-8\?B\?[A-Za-z0-9+/]+={0,2}\?=)*) <[^<>]*>$'
            AND mailroom.is_valid_addr_spec(substring(address FROM '<([^<>]*)>$'))
   END;

-- ---------------------------------------------------------------- the application's cancel
-- Cancel one of the caller's own messages (enqueued_by = session_user: inside this SECURITY
-- DEFINER function current_user is the owner) that is not yet being sent. True when it was
-- cancelled. A message the daemon has claimed ("sending") is not: the UPDATE waits for the
-- claim's row lock, then sees "sending" and leaves it. Other applications' messages look
-- exactly like missing ones.
CREATE FUNCTION mailroom.cancel(message_id bigint) RETURNS boolean
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH cancelled AS (
        UPDATE mailroom.outbox AS o
        SET status = 'cancelled', updated_at = pg_catalog.now(),
            last_error = 'cancelled by the application'
        WHERE o.id = message_id AND o.enqueued_by = session_user
          AND o.status IN ('pending', 'retrying')
        RETURNING o.id
    )
    SELECT EXISTS (SELECT FROM cancelled)
$$;

-- ---------------------------------------------------------------- grants
CREATE FUNCTION mailroom.grants_0012() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    role text;
BEGIN
    FOREACH role IN ARRAY ARRAY['mailroom_app', 'mailroom_daemon', 'mailroom_operator'] LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role) THEN
            -- the validation and the conversion run as whoever writes an outbox row
            EXECUTE pg_catalog.format(
                'GRANT EXECUTE ON FUNCTION mailroom.punycode(text), mailroom.ascii_domain(text),'
                ' mailroom.encoded_words(text), mailroom.ses_address(text),'
                ' mailroom.ses_addresses(text[]), mailroom.bare_address(text),'
                ' mailroom.is_valid_addr_spec(text) TO %I', role);
        END IF;
    END LOOP;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mailroom_app') THEN
        GRANT EXECUTE ON FUNCTION mailroom.cancel(bigint) TO mailroom_app;
    END IF;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
