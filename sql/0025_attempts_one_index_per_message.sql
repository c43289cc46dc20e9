-- 0025: one index fewer written on every send (issue 21).
--
-- Every try appends a row to mailroom.attempts, and every index on it is one more index
-- insertion (a WAL record, a few buffer touches) per email. attempts_by_message (0001)
-- indexes message_id alone; attempts_one_per_try (0023), unique on (message_id,
-- lease_until), leads with the same column and so serves every lookup by message (the
-- operator's history of a message, the foreign key's checks when an outbox row is
-- deleted) as well. The redundant index goes; no row changes.
DROP INDEX IF EXISTS mailroom.attempts_by_message;
