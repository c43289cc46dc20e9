-- One try is one attempt row, whatever the reaper does (issue 19, finding 7).
--
-- A holder whose lease expired while it was still sending records "sent" after the reaper
-- logged the try "lease_expired". When the record waited on the reaper's row lock, its
-- statement's snapshot (older than the reaper's commit) could not see that row, so the try
-- got a second row. Only a unique index is checked against rows a snapshot cannot see
-- (INSERT ... ON CONFLICT), so a try now has a key.
--
-- The key is the lease, not the attempt number: (message_id, attempt) repeats legitimately
-- - a paused try is refunded and the next try takes its number again, and `dead retry`
-- resets the count to 0 while the attempts log keeps the earlier tries. A claim's lease
-- end (locked_until: the claiming transaction's now() plus the lease, to the microsecond)
-- is one value per claim of a message; the holder gets it back from the claim and the
-- reaper reads it from the row it reaps. Rows written before this migration have no lease
-- (NULL, never equal to another): they stay as they are, apart from the duplicates below.

ALTER TABLE mailroom.attempts ADD COLUMN lease_until timestamptz;

COMMENT ON COLUMN mailroom.attempts.lease_until IS
    'End of the lease the try ran under (the claim''s locked_until): with message_id, the try''s key.';

-- The duplicates the race already left: a "lease_expired" row and the "sent" row of the
-- same try, the one whose holder the lease_expired row names. The sent row is the better
-- record (the message was delivered, with SES's id); the lease_expired one is deleted.
DELETE FROM mailroom.attempts AS expired
USING mailroom.attempts AS kept
WHERE expired.outcome OPERATOR(pg_catalog.=) 'lease_expired'
  AND kept.outcome OPERATOR(pg_catalog.=) 'sent'
  AND kept.message_id OPERATOR(pg_catalog.=) expired.message_id
  AND kept.attempt OPERATOR(pg_catalog.=) expired.attempt
  AND expired.error OPERATOR(pg_catalog.=)
      ('lease expired: ' OPERATOR(pg_catalog.||) kept.worker
       OPERATOR(pg_catalog.||) ' did not record an outcome');

CREATE UNIQUE INDEX attempts_one_per_try ON mailroom.attempts (message_id, lease_until);

-- It found the lease_expired row a late success replaced; the unique index does that now.
DROP INDEX mailroom.attempts_lease_expired;
