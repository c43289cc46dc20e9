-- 0032: paging through the suppression list (issue 22, "paging everywhere").
--
-- `mailroom suppression list` and the console's suppression page showed the newest 50 and
-- no more. Keyset paging needs a total order; created_at alone is not one (an import or a
-- bulk add stores hundreds of rows with one now()), and the unique address cannot be the
-- tie-break: the cursor is printed, put in URLs and so in proxy and access logs, and must
-- not carry an address. Each entry gets a number of its own instead, drawn from an
-- identity sequence (existing rows numbered as the rewrite meets them: arbitrary, but
-- fixed); the cursor is (created_at, id), and the index below makes each page one index
-- range, newest first.
--
-- Inserting needs no privilege on the sequence (an identity column's default is not
-- checked against the inserting role), so the daemon's and the operator functions'
-- inserts are unchanged. ADD COLUMN ... IDENTITY rewrites the table under an exclusive
-- lock: the suppression list is small next to the outbox (one row per address ever
-- suppressed; 1,000,000 rows take a few seconds), see docs/operations.md.

ALTER TABLE mailroom.suppressions
    ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE mailroom.suppressions
    ADD CONSTRAINT suppressions_id_unique UNIQUE (id);
CREATE INDEX suppressions_newest_first ON mailroom.suppressions (created_at DESC, id DESC);
