-- 0029: recipient search (issue 22). `mailroom find --to` and the console's search compared
-- the text typed with each stored address, so '"Alice Smith" <alice@example.com>' (the form
-- ses_address() stores a display name in) never matched alice@example.com, a domain typed
-- in Unicode never matched its stored punycode, and every search was a backward scan of the
-- whole outbox (a GIN index over the arrays was ignored by the planner).
--
-- mailroom.outbox_recipients holds one row per message, field (to, cc, bcc) and recipient in
-- the form searches compare: the bare address (addr-spec), lower-cased, its IDN domain in
-- punycode (as stored: ses_address() converted it on the way in), and the domain apart.
-- b-tree indexes over (address | domain, created_at, message_id), in collation "C" so that a
-- prefix (LIKE 'ali%') is an index range, make exact, domain and prefix searches index scans
-- bounded by --since, newest first. mailroom/operator/search.py normalises what the operator
-- types the same way (tests/test_search.py compares the two).
--
-- Nobody writes the table but the triggers below (SECURITY DEFINER, owned by the migrating
-- role): inserts through the insert statement's transition table (one INSERT per statement,
-- not one per row), deletes (retention, dead purge) through the delete statement's, an
-- address change or a TRUNCATE of the outbox likewise. mailroom_operator (and with it
-- mailroom_viewer) may read it; the application and the daemon may not: it names every
-- application's recipients.
--
-- Existing installations: this migration only records how far the triggers reach (every
-- message with an id above the outbox's highest id now). `mailroom migrate` then fills the
-- older messages in batches of 10,000, newest first, each batch its own short transaction
-- (mailroom.backfill_recipients), so that the outbox is never locked for long and a killed
-- migrate carries on where it stopped; it also builds the overview's index of waiting rows
-- (outbox_live: outbox_due_by_time's keys with the status, which it then replaces) with
-- CREATE INDEX CONCURRENTLY, outside any transaction (mailroom/migrate.py, finish()).
-- docs/operations.md, "Upgrading to recipient search", says how long both take.

-- ---------------------------------------------------------------- the table
CREATE TABLE mailroom.outbox_recipients (
    message_id bigint NOT NULL,
    field text NOT NULL,
    address text COLLATE "C" NOT NULL,
    domain text COLLATE "C" NOT NULL,
    -- the message's created_at, so that --since bounds the index range
    created_at timestamptz NOT NULL,
    CONSTRAINT outbox_recipients_field_known CHECK (field IN ('to', 'cc', 'bcc'))
);
COMMENT ON TABLE mailroom.outbox_recipients IS
    'Every recipient of every message, normalised for search; written only by triggers.';
-- exact (address = x) and prefix (address LIKE 'x%'), newest first; with the field, so
-- that a search reads the index alone
CREATE INDEX outbox_recipients_by_address
    ON mailroom.outbox_recipients (address, created_at, message_id) INCLUDE (field);
-- a whole domain (@example.com), newest first
CREATE INDEX outbox_recipients_by_domain
    ON mailroom.outbox_recipients (domain, created_at, message_id) INCLUDE (field);
-- the delete trigger's lookup
CREATE INDEX outbox_recipients_by_message ON mailroom.outbox_recipients (message_id);

-- How far the backfill of messages older than this migration has come: messages with an
-- id at or below `below` are not in outbox_recipients yet (0: every message is).
CREATE TABLE mailroom.recipients_backfill (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    below bigint NOT NULL CHECK (below >= 0),
    started_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at timestamptz
);

-- ---------------------------------------------------------------- the triggers
-- The rows of new messages. The stored addresses are already in the form ses_address()
-- writes (0012), so normalize_address() (0009: the addr-spec, lower-cased) is all that is
-- left to do; the same text as in backfill_recipients() below.
CREATE FUNCTION mailroom.outbox_recipients_add() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO mailroom.outbox_recipients (message_id, field, address, domain, created_at)
    SELECT DISTINCT n.id, f.field, k.address, pg_catalog.split_part(k.address, '@', -1),
           n.created_at
    FROM added AS n
    CROSS JOIN LATERAL (VALUES ('to', n.to_addresses), ('cc', n.cc_addresses),
                               ('bcc', n.bcc_addresses)) AS f (field, list)
    CROSS JOIN LATERAL pg_catalog.unnest(f.list) AS a (address)
    CROSS JOIN LATERAL (SELECT mailroom.normalize_address(a.address)) AS k (address);
    RETURN NULL;
END
$$;

CREATE FUNCTION mailroom.outbox_recipients_remove() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- an id array rather than a join: a transition table has no statistics, and a join
    -- could be planned as a scan of every recipient
    DELETE FROM mailroom.outbox_recipients AS r
    WHERE r.message_id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT g.id FROM removed AS g));
    RETURN NULL;
END
$$;

-- Nobody changes a message's recipients today (the operator and the daemon have no UPDATE
-- on them); the owner could, and the search must follow.
CREATE FUNCTION mailroom.outbox_recipients_change() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM mailroom.outbox_recipients AS r
    WHERE r.message_id OPERATOR(pg_catalog.=) NEW.id;
    INSERT INTO mailroom.outbox_recipients (message_id, field, address, domain, created_at)
    SELECT DISTINCT NEW.id, f.field, k.address, pg_catalog.split_part(k.address, '@', -1),
           NEW.created_at
    FROM (VALUES ('to', NEW.to_addresses), ('cc', NEW.cc_addresses),
                 ('bcc', NEW.bcc_addresses)) AS f (field, list)
    CROSS JOIN LATERAL pg_catalog.unnest(f.list) AS a (address)
    CROSS JOIN LATERAL (SELECT mailroom.normalize_address(a.address)) AS k (address);
    RETURN NULL;
END
$$;

CREATE FUNCTION mailroom.outbox_recipients_truncate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    TRUNCATE mailroom.outbox_recipients;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_recipients_add AFTER INSERT ON mailroom.outbox
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION mailroom.outbox_recipients_add();
CREATE TRIGGER outbox_recipients_remove AFTER DELETE ON mailroom.outbox
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION mailroom.outbox_recipients_remove();
-- a row trigger: a statement trigger with transition tables cannot name columns, and would
-- copy every row of every status update the daemon makes
CREATE TRIGGER outbox_recipients_change
    AFTER UPDATE OF to_addresses, cc_addresses, bcc_addresses ON mailroom.outbox
    FOR EACH ROW
    WHEN (OLD.to_addresses IS DISTINCT FROM NEW.to_addresses
          OR OLD.cc_addresses IS DISTINCT FROM NEW.cc_addresses
          OR OLD.bcc_addresses IS DISTINCT FROM NEW.bcc_addresses)
    EXECUTE FUNCTION mailroom.outbox_recipients_change();
CREATE TRIGGER outbox_recipients_truncate AFTER TRUNCATE ON mailroom.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION mailroom.outbox_recipients_truncate();

-- ---------------------------------------------------------------- the backfill
-- The trigger exists from here on, and creating it waited for every transaction that was
-- inserting into the outbox: every message with an id above the highest one now is the
-- trigger's, every one at or below it the backfill's.
INSERT INTO mailroom.recipients_backfill (below, finished_at)
SELECT coalesce(pg_catalog.max(o.id), 0),
       CASE WHEN pg_catalog.max(o.id) IS NULL THEN pg_catalog.now() END
FROM mailroom.outbox AS o;

-- One batch: up to `batch` messages, newest first, below the mark; returns the new mark
-- (0: done). Each call is one transaction of its caller (finish() in mailroom/migrate.py runs
-- it in autocommit): a kill loses at most the batch, which the next migrate redoes. FOR KEY
-- SHARE keeps a concurrent delete (retention, dead purge) of a message of the batch until
-- the batch commits, so that its delete trigger then removes the rows written here.
CREATE FUNCTION mailroom.backfill_recipients(batch integer) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    mark bigint;
    lowest bigint;
    taken bigint;
BEGIN
    SELECT b.below INTO mark FROM mailroom.recipients_backfill AS b FOR UPDATE;
    IF mark IS NULL OR mark OPERATOR(pg_catalog.=) 0 THEN
        RETURN 0;
    END IF;
    WITH taken_rows AS MATERIALIZED (
        SELECT o.id, o.created_at, o.to_addresses, o.cc_addresses, o.bcc_addresses
        FROM mailroom.outbox AS o
        WHERE o.id OPERATOR(pg_catalog.<=) mark
        ORDER BY o.id DESC
        LIMIT batch
        FOR KEY SHARE
    ), written AS (
        INSERT INTO mailroom.outbox_recipients (message_id, field, address, domain, created_at)
        SELECT DISTINCT n.id, f.field, k.address, pg_catalog.split_part(k.address, '@', -1),
               n.created_at
        FROM taken_rows AS n
        CROSS JOIN LATERAL (VALUES ('to', n.to_addresses), ('cc', n.cc_addresses),
                                   ('bcc', n.bcc_addresses)) AS f (field, list)
        CROSS JOIN LATERAL pg_catalog.unnest(f.list) AS a (address)
        CROSS JOIN LATERAL (SELECT mailroom.normalize_address(a.address)) AS k (address)
    )
    SELECT pg_catalog.count(*), pg_catalog.min(t.id) INTO taken, lowest FROM taken_rows AS t;
    IF taken OPERATOR(pg_catalog.<) batch THEN
        mark := 0;
    ELSE
        mark := lowest OPERATOR(pg_catalog.-) 1;
    END IF;
    UPDATE mailroom.recipients_backfill
    SET below = mark,
        finished_at = CASE WHEN mark OPERATOR(pg_catalog.=) 0 THEN pg_catalog.now() END;
    RETURN mark;
END
$$;

REVOKE EXECUTE ON FUNCTION mailroom.outbox_recipients_add(), mailroom.outbox_recipients_remove(),
    mailroom.outbox_recipients_change(), mailroom.outbox_recipients_truncate(),
    mailroom.backfill_recipients(integer) FROM PUBLIC;

-- Run by every migrate (grant_roles takes the grants_NNNN functions in name order; the
-- viewer's grants_9999 then gives mailroom_viewer the same SELECT).
CREATE FUNCTION mailroom.grants_0029() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'mailroom_operator') THEN
        -- the search, and whether it is complete yet
        GRANT SELECT ON mailroom.outbox_recipients, mailroom.recipients_backfill
            TO mailroom_operator;
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION mailroom.grants_0029() FROM PUBLIC;
