-- Retention: the daemon prunes sent messages by age of sent_at, a batch at a time, oldest
-- first. Index sent rows alone (as 0002 did for dead ones) so that neither the pruning nor
-- `mailroom status` ("sent in the last hour") walks the whole table.
--
-- On a very large existing outbox, build it by hand first without blocking enqueues
-- (this migration then finds it and does nothing):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_sent_at
--       ON mailroom.outbox (queue, sent_at) WHERE status = 'sent';
CREATE INDEX IF NOT EXISTS outbox_sent_at ON mailroom.outbox (queue, sent_at)
    WHERE status = 'sent';
