-- Dead letters are read by operators and counted by the metrics refresher; index them
-- alone so neither scans the history of sent mail.
CREATE INDEX outbox_dead ON mailroom.outbox (queue, updated_at) WHERE status = 'dead';
