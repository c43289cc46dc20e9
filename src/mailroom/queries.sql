-- Every query mailroom runs, each under a "-- name: NAME" header. outbox.py is the only
-- module that executes them; migrate.py uses the migration bookkeeping ones.
-- Parameters are psycopg named placeholders; {identifier} slots are filled with
-- psycopg.sql.Identifier, never with string formatting.
--
-- Name resolution: an operator or function in a schema on the search_path that matches
-- the argument types exactly wins over pg_catalog's (which may need an implicit cast), so
-- whoever can CREATE in such a schema (public) could run code as the connected role. Every
-- connection mailroom opens itself therefore runs safe_search_path right after connect,
-- and migrate runs each migration and its bookkeeping under the same path; the queries
-- below rely on that. Queries run on the APPLICATION's connection (mailroom.client, the
-- Django backend, lifecycle), whose session mailroom must not change, are not protected by
-- it.

-- name: safe_search_path
-- Only the catalog and the session's temporary schema (last, so it never shadows a
-- catalog name): mailroom's own objects are always written schema-qualified.
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)

-- name: search_path_get
SELECT pg_catalog.current_setting('search_path')

-- name: search_path_set
SELECT pg_catalog.set_config('search_path', %(path)s, %(local)s)

-- name: claim
-- Lease up to %(limit)s due messages, highest priority then oldest due first. The lease
-- is committed at once (autocommit): no transaction stays open while SES is called.
-- MATERIALIZED: the LIMIT ... SKIP LOCKED set is chosen once, never re-run by a join.
-- Template data comes back as JSON text: SES wants text, and a pathological document
-- (deeply nested) must fail for its own message, not in the driver for the whole batch.
WITH due AS MATERIALIZED (
    SELECT id
    FROM mailroom.outbox
    WHERE queue = %(queue)s
      AND status IN ('pending', 'retrying')
      AND next_attempt_at <= now()
      -- a queue an operator paused (0027, issue 22): nothing is claimed from it
      AND NOT EXISTS (SELECT FROM mailroom.queue_pauses AS p WHERE p.queue = %(queue)s)
    ORDER BY priority DESC, next_attempt_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
UPDATE mailroom.outbox AS m
SET status = 'sending',
    attempts = m.attempts + 1,
    locked_by = %(owner)s,
    locked_until = now() + make_interval(secs => %(lease_seconds)s),
    updated_at = now()
-- an array of ids, not a join: with statistics the planner would hash-join the batch
-- against a scan of the whole outbox
WHERE m.id = ANY (ARRAY(SELECT id FROM due))
RETURNING m.id, m.attempts, m.max_attempts, m.from_address, m.to_addresses,
          m.cc_addresses, m.bcc_addresses, m.reply_to_addresses, m.config_set,
          m.template, m.template_data::text AS template_data, m.subject, m.body_text,
          m.body_html, m.raw_mime, extract(epoch FROM m.created_at)::float8 AS created,
          m.enqueued_by, m.priority, m.next_attempt_at, m.locked_until
)
-- RETURNING comes in the table's order: outbox.claim sorts the rows by the priority and
-- the due time that follow the token's columns (then id), so that a batch's calls start
-- in claim order (highest priority, then oldest due), however big the batch (claims grow
-- under a backlog). Sorting here cost the database 0.6 ms per 500 rows (the sort moves
-- whole rows, template data included); the daemon sorts them in 0.1 ms.
-- A token to sign (0019) comes with its message: one primary-key probe per claimed
-- message into a table holding only the pending token emails. locked_until last: the
-- lease is the try's key in mailroom.attempts (0023), given back by the holder when it
-- records.
-- Empty address lists come back as NULL: the driver builds a list for every array it
-- reads, ~1.5 µs each, and most messages have no cc, bcc or reply-to (outbox.claim puts
-- the empty lists back).
SELECT c.id, c.attempts, c.max_attempts, c.from_address, c.to_addresses,
       nullif(c.cc_addresses, '{}'), nullif(c.bcc_addresses, '{}'),
       nullif(c.reply_to_addresses, '{}'), c.config_set, c.template, c.template_data,
       c.subject, c.body_text, c.body_html, c.raw_mime, c.created, c.enqueued_by,
       t.action, t.field, t.secret, t.code, t.recipient, t.template,
       c.priority, c.next_attempt_at, c.locked_until
FROM claimed AS c
LEFT JOIN mailroom.message_tokens AS t ON t.message_id = c.id

-- name: record
-- Apply a whole batch's outcomes in one round trip and append one attempt row per try.
-- Only the lease holder may write, except that "sent" is always worth recording: it
-- stops a second daemon that reclaimed an expired lease from sending again, and a
-- message reaped to dead while SES was accepting it was in fact delivered.
-- NULL statuses, refunds, delays, errors and attempt outcomes mean "all sent": unnest pads
-- a NULL array with NULLs, and the coalesces below supply the sent defaults. tries and
-- leases are the holder's try number and lease end from its claim (NULL: not known; the
-- row then counts the try from the outbox row and has no key).
-- DISTINCT ON: one outcome per message, the first given, so that one statement never
-- writes one try twice (ON CONFLICT DO UPDATE refuses to touch a row twice).
WITH outcome AS (
    SELECT DISTINCT ON (id)
           id, coalesce(status, 'sent') AS status, coalesce(refund, 0) AS refund,
           coalesce(delay, 0) AS delay, provider_id, error,
           CASE WHEN status IS NULL THEN 'sent' ELSE attempt_outcome END AS attempt_outcome,
           try, lease_until
    -- the arrays travel in binary (%(name)b): the driver writes a text array element by
    -- element in Python, ~3 µs each, five times per email
    FROM unnest(
        %(ids)b::bigint[], %(statuses)b::text[], %(refunds)b::int[], %(delays)b::float8[],
        %(provider_ids)b::text[], %(errors)b::text[], %(attempt_outcomes)b::text[],
        %(tries)b::int[], %(leases)b::timestamptz[]
    ) WITH ORDINALITY
        AS o(id, status, refund, delay, provider_id, error, attempt_outcome, try, lease_until, n)
    ORDER BY id, n
),
updated AS (
    UPDATE mailroom.outbox AS m
    SET status = o.status,
        attempts = m.attempts - o.refund,
        next_attempt_at = CASE
            WHEN o.status IN ('pending', 'retrying')
                THEN now() + make_interval(secs => o.delay)
            ELSE m.next_attempt_at
        END,
        provider_message_id = coalesce(o.provider_id, m.provider_message_id),
        -- (a raw token secret to sign goes with the message's final state: the trigger
        -- outbox_forget_token drops it, 0017; the daemon may not write template data)
        -- a sent message does not look failed: an earlier try's error goes
        last_error = CASE WHEN o.status = 'sent' THEN NULL ELSE coalesce(o.error, m.last_error) END,
        sent_at = CASE WHEN o.status = 'sent' THEN now() ELSE m.sent_at END,
        locked_by = NULL,
        locked_until = NULL,
        updated_at = now()
    FROM outcome AS o
    WHERE m.id = o.id
      AND ((m.status = 'sending' AND m.locked_by = %(owner)s)
           OR (o.status = 'sent' AND m.status IN ('sending', 'retrying', 'pending', 'dead')))
    RETURNING m.id, m.attempts
)
-- A holder whose lease expired while it was still sending: the reaper logged its try as
-- "lease_expired" under the same lease; that row becomes this one, keeping the try's
-- number: one try, one row. The unique index attempts_one_per_try (0023) finds the row
-- even when the reaper committed it after this statement's snapshot was taken (the record
-- waited on the reaper's row lock): a snapshot would not see it, the index check does.
-- Any other row of the same lease is this try's already: nothing is written twice.
, logged AS (
    INSERT INTO mailroom.attempts AS a
        (message_id, attempt, outcome, provider_message_id, error, worker, lease_until)
    SELECT u.id, coalesce(o.try, u.attempts + o.refund), o.attempt_outcome, o.provider_id,
           o.error, %(owner)s, o.lease_until
    FROM updated AS u
    JOIN outcome AS o USING (id)
    WHERE o.attempt_outcome IS NOT NULL
    ON CONFLICT (message_id, lease_until) DO UPDATE
    SET outcome = excluded.outcome, provider_message_id = excluded.provider_message_id,
        error = excluded.error, worker = excluded.worker, at = now()
    WHERE a.outcome = 'lease_expired'
)
SELECT coalesce(array_agg(id), ARRAY[]::bigint[]) FROM updated

-- name: reap_expired
-- Leases whose holder died: back to due at once, or dead when the crashed try was the
-- last one allowed (a message that crashes the daemon must not loop for ever). The
-- attempt row names the holder (whose try it was, not the reaper's) and carries the
-- lease, so that the holder's late record finds it (see record). FOR UPDATE returns the
-- row's latest version, so locked_by and locked_until are the lease being ended.
WITH expired AS MATERIALIZED (
    SELECT id, locked_by, locked_until
    FROM mailroom.outbox
    WHERE queue = %(queue)s AND status = 'sending' AND locked_until < now()
    ORDER BY locked_until
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
),
updated AS (
    UPDATE mailroom.outbox AS m
    SET status = CASE WHEN m.attempts >= m.max_attempts THEN 'dead' ELSE 'retrying' END,
        next_attempt_at = now(),
        last_error = 'lease expired: ' || m.locked_by || ' did not record an outcome',
        locked_by = NULL,
        locked_until = NULL,
        updated_at = now()
    FROM expired
    WHERE m.id = expired.id
    RETURNING m.id, m.attempts, m.last_error, expired.locked_by, expired.locked_until
),
-- (a row of this lease cannot exist: the holder's record ends the lease; DO NOTHING keeps
-- the reaper from failing, and so retrying for ever, if one ever did)
logged AS (
    INSERT INTO mailroom.attempts (message_id, attempt, outcome, error, worker, lease_until)
    SELECT id, attempts, 'lease_expired', last_error, locked_by, locked_until FROM updated
    ON CONFLICT (message_id, lease_until) DO NOTHING
)
SELECT count(*) FROM updated

-- name: next_wakeup
-- Seconds until the earliest scheduled message or lease expiry of this queue (NULL: none).
SELECT extract(epoch FROM least(
    (SELECT min(next_attempt_at) FROM mailroom.outbox
     WHERE queue = %(queue)s AND status IN ('pending', 'retrying')),
    (SELECT min(locked_until) FROM mailroom.outbox
     WHERE queue = %(queue)s AND status = 'sending')
) - now())::float8

-- name: enqueue
SELECT mailroom.enqueue(
    to_addresses => %(to_addresses)s::text[],
    template => %(template)s,
    template_data => %(template_data)s::jsonb,
    subject => %(subject)s,
    body_text => %(body_text)s,
    body_html => %(body_html)s,
    raw_mime => %(raw_mime)s::bytea,
    from_address => %(from_address)s,
    cc_addresses => %(cc_addresses)s::text[],
    bcc_addresses => %(bcc_addresses)s::text[],
    reply_to_addresses => %(reply_to_addresses)s::text[],
    config_set => %(config_set)s,
    priority => %(priority)s::smallint,
    not_before => %(not_before)s::timestamptz,
    idempotency_key => %(idempotency_key)s,
    max_attempts => %(max_attempts)s::int,
    queue => %(queue)s
)

-- name: counts_by_status
SELECT status, count(*) FROM mailroom.outbox WHERE queue = %(queue)s GROUP BY status

-- name: listen
LISTEN {channel}

-- name: listening
-- Heartbeat on the LISTEN session itself: proves the session is alive and still listening.
SELECT %(channel)s IN (SELECT pg_listening_channels())

-- name: wake
SELECT pg_notify(%(channel)s, %(queue)s)

-- name: migrations_lock
-- Session-level advisory lock: replicas that migrate at once apply each version once.
-- Tried, not waited for (migrate.py polls): a session blocked in pg_advisory_lock is in a
-- transaction, and the holder's CREATE INDEX CONCURRENTLY (0029's finish) waits for every
-- open transaction to end - a deadlock PostgreSQL breaks by failing one migrate.
SELECT pg_catalog.pg_try_advisory_lock(7283946150021)

-- name: migrations_unlock
SELECT pg_catalog.pg_advisory_unlock(7283946150021)

-- name: outbox_live_index
-- The overview's index of live rows (0029), built after the migration's transaction:
-- NULL when it is missing, false when a killed CREATE INDEX CONCURRENTLY left it invalid.
SELECT (SELECT i.indisvalid FROM pg_catalog.pg_index AS i
        WHERE i.indexrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('mailroom.outbox_live'))

-- name: outbox_live_index_drop
DROP INDEX CONCURRENTLY IF EXISTS mailroom.outbox_live

-- name: outbox_live_index_create
-- Every due, scheduled or retrying row with its status, so that the overview's queue table
-- is an index-only scan however many sent rows are kept. Same keys and predicate as
-- outbox_due_by_time (0001), which it replaces (outbox_due_by_time_drop): the outbox keeps
-- as many indexes as before, and enqueues and sends write no more index entries.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_live
    ON mailroom.outbox (queue, next_attempt_at) INCLUDE (status)
    WHERE status IN ('pending', 'retrying')

-- name: outbox_due_by_time_drop
-- Once outbox_live serves its queries (the next due time, the oldest due).
DROP INDEX CONCURRENTLY IF EXISTS mailroom.outbox_due_by_time

-- name: backfill_recipients
-- One batch of 0029's backfill; the new mark (0: done).
SELECT mailroom.backfill_recipients(%(batch)s::integer)

-- name: recipients_backfill_state
-- NULL before 0029; the mark (messages at or below it are not searchable yet; 0: all are).
SELECT (SELECT b.below FROM mailroom.recipients_backfill AS b)

-- name: migrations_bootstrap
CREATE SCHEMA IF NOT EXISTS mailroom;
CREATE TABLE IF NOT EXISTS mailroom.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.now()
)

-- name: migrations_applied
SELECT version, name, checksum FROM mailroom.schema_migrations ORDER BY version

-- name: migrations_record
INSERT INTO mailroom.schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)

-- name: set_channel
UPDATE mailroom.settings SET channel = %(channel)s WHERE channel IS DISTINCT FROM %(channel)s

-- name: reserve_rate
-- Seconds to wait before `wanted` recipients fit the shared send-rate budget.
SELECT mailroom.reserve_rate(%(bucket)s, %(rate)s, %(burst)s, %(wanted)s)

-- name: revoke_public
-- Run by every migrate: functions are executable by PUBLIC by default, and a per-schema
-- ALTER DEFAULT PRIVILEGES cannot take that global default away.
REVOKE ALL ON ALL TABLES IN SCHEMA mailroom FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA mailroom FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC

-- name: grant_roles
-- Re-applied by every migrate: roles created after 0004 get their grants too.
SELECT mailroom.grant_roles()

-- name: migrations_table_exists
SELECT pg_catalog.to_regclass('mailroom.schema_migrations') IS NOT NULL

-- name: settings_channel
SELECT channel FROM mailroom.settings

-- name: gauges
-- Depth of live work and age of the oldest due message, from the partial indexes only:
-- the history of sent mail is never counted.
SELECT
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'pending'),
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'retrying'),
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'sending'),
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'dead'),
    coalesce((
        SELECT extract(epoch FROM now() - min(next_attempt_at))
        FROM mailroom.outbox
        WHERE queue = %(queue)s AND status IN ('pending', 'retrying') AND next_attempt_at <= now()
    ), 0)::float8

-- name: queue_paused
-- 1 while an operator has paused the daemon's queue (0027): the mailroom_queue_paused gauge.
SELECT EXISTS (SELECT FROM mailroom.queue_pauses WHERE queue = %(queue)s)

-- name: consume_token
-- Check and consume a token in one round trip; says why when it cannot. Found by the
-- secret's SHA-256 (lifecycle 1003: the raw secret is not kept); its HMAC, checked
-- before, binds the code, so no code is compared here.
-- This and request_password_recovery run on the APPLICATION's connection, whose
-- search_path mailroom leaves alone: every operator and function is written qualified, so
-- nothing another role planted in a schema on that path (an exact-type "=" for an enum
-- beats pg_catalog's anyenum one) can bind here.
WITH found AS (
    SELECT id, account_id, consumed_at, expires_at
    FROM mailroom.tokens
    WHERE secret_hash OPERATOR(pg_catalog.=) %(secret_hash)s::pg_catalog.bytea
      AND action OPERATOR(pg_catalog.=) %(action)s::mailroom.token_action
    FOR UPDATE
),
consumed AS (
    UPDATE mailroom.tokens AS t
    SET consumed_at = pg_catalog.now()
    FROM found
    WHERE t.id OPERATOR(pg_catalog.=) found.id
      AND found.consumed_at IS NULL
      AND found.expires_at OPERATOR(pg_catalog.>) pg_catalog.now()
    RETURNING t.account_id
)
SELECT
    (SELECT account_id FROM consumed),
    (SELECT CASE
        WHEN consumed_at IS NOT NULL THEN 'already consumed'
        ELSE 'expired'
     END FROM found),
    EXISTS (SELECT FROM found)

-- name: request_password_recovery
-- A recovery token (and so its email) for an active account found by login or email.
-- Only the caller's own (lifecycle 1004): row-level security says so for applications,
-- this for a role that bypasses it, where one login may be several applications' users.
-- Qualified throughout, as consume_token (the application's connection).
INSERT INTO mailroom.tokens (account_id, action)
SELECT id, 'password_recovery'::mailroom.token_action
FROM mailroom.accounts
WHERE (login OPERATOR(pg_catalog.=) %(who)s::pg_catalog.text
       OR email OPERATOR(pg_catalog.=) %(who)s::pg_catalog.text)
  AND status OPERATOR(pg_catalog.=) 'active'::mailroom.account_status
  AND owner OPERATOR(pg_catalog.=) session_user
RETURNING id

-- ---- operator commands and retention ----
-- operator/admin.py (the `mailroom status | show | dead | send-test` commands) and daemon/retention.py
-- (the daemon's pruning task) run these. A dead letter's "reason" is the head of its
-- last_error: the error code, with the "gave up after N attempts: " prefix when retries
-- ran out; it is always a substring of last_error, so `dead list --reason` finds it.

-- name: status_overview
-- Depth by live status through the partial indexes, due work, the age of the oldest due
-- message, and the send rate. Not the count of every sent message kept: that reads the
-- whole history (outbox_sent_at, a second per ten million), as queues_overview says.
SELECT
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'pending'),
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'retrying'),
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'sending'),
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'dead'),
    (SELECT count(*) FROM mailroom.outbox
     WHERE queue = %(queue)s AND status IN ('pending', 'retrying') AND next_attempt_at <= now()),
    coalesce((
        SELECT extract(epoch FROM now() - min(next_attempt_at))
        FROM mailroom.outbox
        WHERE queue = %(queue)s AND status IN ('pending', 'retrying') AND next_attempt_at <= now()
    ), 0)::float8,
    (SELECT count(*) FROM mailroom.outbox
     WHERE queue = %(queue)s AND status = 'sent' AND sent_at > now() - interval '1 minute'),
    (SELECT count(*) FROM mailroom.outbox
     WHERE queue = %(queue)s AND status = 'sent' AND sent_at > now() - interval '1 hour'),
    now()

-- name: status_dead_reasons
SELECT reason, count(*) AS messages
FROM (
    SELECT coalesce(left(substring(last_error FROM
               '^(gave up after [0-9]+ attempts: [^:]*|[^:]*)'), 200), '(none)') AS reason
    FROM mailroom.outbox
    WHERE queue = %(queue)s AND status = 'dead'
) AS dead
GROUP BY reason
ORDER BY messages DESC, reason
LIMIT %(limit)s

-- name: status_leases
-- Daemons holding leases now; a negative expiry means the holder died (or hangs) and the
-- next poll of any daemon reclaims its messages.
SELECT locked_by, count(*), extract(epoch FROM min(locked_until) - now())::float8
FROM mailroom.outbox
WHERE queue = %(queue)s AND status = 'sending'
GROUP BY locked_by
ORDER BY locked_by

-- name: message_show
-- One message without its content: the template data's keys only, no bodies; whether it
-- carries a token, and of which kind (never the token: 0019).
SELECT id, queue, status, priority, from_address, to_addresses, cc_addresses,
       bcc_addresses, reply_to_addresses, config_set,
       coalesce(template, CASE WHEN raw_mime IS NOT NULL THEN 'raw' ELSE 'simple' END),
       subject,
       coalesce((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(template_data) AS k),
                ARRAY[]::text[]),
       idempotency_key, attempts, max_attempts, created_at, not_before, next_attempt_at,
       locked_by, locked_until, updated_at, sent_at, provider_message_id, last_error,
       (SELECT t.action FROM mailroom.message_token_actions AS t WHERE t.message_id = outbox.id),
       -- raw MIME: its header section's start, for the Subject (text.mime_subject)
       substring(raw_mime FROM 1 FOR 16384)
FROM mailroom.outbox
WHERE id = %(id)s

-- name: message_attempts
SELECT attempt, outcome, at, worker, provider_message_id, error
FROM mailroom.attempts
WHERE message_id = %(id)s
ORDER BY at, id

-- name: message_outcome
SELECT status, attempts, provider_message_id, last_error
FROM mailroom.outbox
WHERE id = %(id)s

-- name: message_states
-- For `dead retry ID...`: what each id is, and whether it is a token email (whose raw
-- secret was forgotten when it died, so that it cannot be sent again).
SELECT id, status, coalesce(starts_with(idempotency_key, 'mailroom-token:'), false)
FROM mailroom.outbox
WHERE id = ANY (%(ids)s::bigint[])

-- name: dead_count
-- How many dead letters match (and how many of them are token emails, which retry
-- skips), and the moment counted: batches touch only rows dead by then, so a retried
-- message that dies again during the run is not retried twice.
SELECT count(*),
       count(*) FILTER (WHERE starts_with(idempotency_key, 'mailroom-token:')),
       clock_timestamp()
FROM mailroom.outbox
WHERE status = 'dead'
  AND mailroom.dead_letter_matches(outbox, %(ids)s::bigint[], %(queue)s::text,
      %(template)s::text, %(reason)s::text, %(since)s::timestamptz, %(before)s::timestamptz)

-- name: dead_retry_batch
-- Re-arm one batch of matching dead letters, in (updated_at, id) order after the cursor:
-- pending, attempts 0, due now. last_error keeps the reason it died until a new try
-- replaces it; the attempts log keeps the earlier tries. Token emails are skipped.
-- Returns each row's queue (to wake its daemons) and its old updated_at (the cursor).
-- The function (migration 0020) checks the arguments and appends the batch's audit row.
SELECT message_id, message_queue, died_at
FROM mailroom.operator_dead_retry(%(snapshot)s::timestamptz, %(after_at)s::timestamptz,
    %(after_id)s::bigint, %(limit)s::integer, %(ids)s::bigint[], %(queue)s::text,
    %(template)s::text, %(reason)s::text, %(since)s::timestamptz, %(before)s::timestamptz,
    %(operator)s::text, %(via)s::text, %(action_id)s::uuid, %(audit_reason)s::text)

-- name: dead_purge_batch
-- Delete one batch of matching dead letters (their attempts cascade), in (updated_at, id)
-- order after the cursor. Returns each row's id and updated_at (the cursor). The function
-- (migration 0020) checks the arguments and appends the batch's audit row.
SELECT message_id, died_at
FROM mailroom.operator_dead_purge(%(snapshot)s::timestamptz, %(after_at)s::timestamptz,
    %(after_id)s::bigint, %(limit)s::integer, %(ids)s::bigint[], %(queue)s::text,
    %(template)s::text, %(reason)s::text, %(since)s::timestamptz, %(before)s::timestamptz,
    %(operator)s::text, %(via)s::text, %(action_id)s::uuid, %(audit_reason)s::text)

-- name: prune_sent
-- Retention: delete one batch of messages sent longer ago than keep_seconds, oldest first
-- (outbox_sent_at index); their attempts cascade. Rows another session holds are skipped.
-- MATERIALIZED: the LIMIT ... SKIP LOCKED subquery must run once; inlined into the join,
-- a nested loop may rescan it and delete more than one batch.
WITH doomed AS MATERIALIZED (
    SELECT id
    FROM mailroom.outbox
    WHERE queue = %(queue)s AND status = 'sent'
      AND sent_at < now() - make_interval(secs => %(keep_seconds)s)
    ORDER BY sent_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
deleted AS (
    DELETE FROM mailroom.outbox AS m
    USING doomed
    WHERE m.id = doomed.id AND m.status = 'sent'
    RETURNING 1
)
SELECT count(*) FROM deleted

-- name: prune_dead
-- Retention: delete one batch of messages dead for longer than keep_seconds, oldest first
-- (outbox_dead index); their attempts cascade.
WITH doomed AS MATERIALIZED (
    SELECT id
    FROM mailroom.outbox
    WHERE queue = %(queue)s AND status = 'dead'
      AND updated_at < now() - make_interval(secs => %(keep_seconds)s)
    ORDER BY updated_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
deleted AS (
    DELETE FROM mailroom.outbox AS m
    USING doomed
    WHERE m.id = doomed.id AND m.status = 'dead'
    RETURNING 1
)
SELECT count(*) FROM deleted

-- name: daemon_privileges
-- What `mailroom run` needs and the connected role lacks (empty: all there). Checked at
-- start so that a daemon under the wrong role stops at once instead of sending mail it
-- then cannot record. One privilege per row: has_table_privilege with a list of
-- privileges answers "any of them".
SELECT p.what
FROM (VALUES
    ('SELECT on mailroom.outbox', has_table_privilege('mailroom.outbox', 'SELECT')),
    ('SELECT on mailroom.message_tokens',
     has_table_privilege('mailroom.message_tokens', 'SELECT')),
    -- column grants since 0017: the outcome columns only
    ('UPDATE on mailroom.outbox (status, lease, outcome)',
     has_column_privilege('mailroom.outbox', 'status', 'UPDATE')
     AND has_column_privilege('mailroom.outbox', 'locked_until', 'UPDATE')
     AND has_column_privilege('mailroom.outbox', 'provider_message_id', 'UPDATE')),
    ('DELETE on mailroom.outbox', has_table_privilege('mailroom.outbox', 'DELETE')),
    ('INSERT on mailroom.attempts', has_table_privilege('mailroom.attempts', 'INSERT')),
    ('UPDATE on mailroom.attempts', has_table_privilege('mailroom.attempts', 'UPDATE')),
    ('UPDATE on mailroom.rate_buckets', has_table_privilege('mailroom.rate_buckets', 'UPDATE')),
    ('INSERT on mailroom.recipient_sends',
     has_table_privilege('mailroom.recipient_sends', 'INSERT')),
    ('INSERT on mailroom.events', has_table_privilege('mailroom.events', 'INSERT')),
    ('EXECUTE on mailroom.prune_events()', has_function_privilege(
        'mailroom.prune_events(double precision, integer)', 'EXECUTE')),
    ('EXECUTE on mailroom.prune_changes()', has_function_privilege(
        'mailroom.prune_changes(double precision, integer)', 'EXECUTE')),
    ('INSERT on mailroom.daemons', has_table_privilege('mailroom.daemons', 'INSERT')),
    ('UPDATE on mailroom.daemons', has_table_privilege('mailroom.daemons', 'UPDATE')),
    ('DELETE on mailroom.daemons', has_table_privilege('mailroom.daemons', 'DELETE')),
    ('SELECT on mailroom.suppressions', has_table_privilege('mailroom.suppressions', 'SELECT')),
    ('SELECT on mailroom.queue_pauses', has_table_privilege('mailroom.queue_pauses', 'SELECT')),
    ('INSERT on mailroom.suppressions', has_table_privilege('mailroom.suppressions', 'INSERT')),
    ('EXECUTE on mailroom.reserve_send()', has_function_privilege(
        'mailroom.reserve_send(text, double precision, double precision, double precision,'
        ' boolean, double precision, double precision)', 'EXECUTE')),
    ('EXECUTE on mailroom.rate_throttled()', has_function_privilege(
        'mailroom.rate_throttled(text, double precision, double precision, double precision,'
        ' double precision)', 'EXECUTE')),
    ('EXECUTE on mailroom.rate_quota()', has_function_privilege(
        'mailroom.rate_quota(text, double precision, double precision, double precision)',
        'EXECUTE'))
) AS p(what, held)
WHERE NOT p.held

-- ================================================================ account health, caps
-- (issue 13 items 4 and 5; migration 0011)

-- name: caps_lock
-- The caps' "addresses" are counting keys: the enqueuing login role, U+001F, the address
-- (caps per application, the default) or the address alone (MAILROOM_RECIPIENT_CAP_SCOPE=
-- global); see mailroom.capstep.candidate.
-- Decisions for one recipient are taken one at a time, across replicas and concurrent
-- batches: a transaction-scoped advisory lock per address (in a fixed order: no
-- deadlock), held while the recent sends are read and the new ones written.
SELECT count(pg_advisory_xact_lock(1835102829, k))
FROM (SELECT DISTINCT hashtext(a) AS k FROM unnest(%(addresses)s::text[]) AS a ORDER BY k) AS s

-- name: caps_recent
-- Per-recipient caps: for each address of a batch, the messages sent to it within the
-- horizon (template, age in seconds), the batch's own messages excluded. One query per
-- batch; recipient_sends_by_address makes it an index range per address.
SELECT k.address, s.template, extract(epoch FROM now() - s.at)::float8
FROM unnest(%(addresses)s::text[]) AS k(address)
JOIN mailroom.recipient_sends AS s ON s.address_key = mailroom.recipient_key(k.address)
WHERE s.at > now() - make_interval(secs => %(horizon)s)
  AND s.message_id <> ALL (%(ids)s::bigint[])

-- name: caps_log
-- The batch's messages that were let through, one row per distinct recipient; a retried
-- message is already there and counts once.
INSERT INTO mailroom.recipient_sends (address_key, message_id, template)
SELECT DISTINCT mailroom.recipient_key(u.address), u.id, u.template
FROM unnest(%(addresses)s::text[], %(ids)s::bigint[], %(templates)s::text[])
    AS u(address, id, template)
ON CONFLICT DO NOTHING

-- name: caps_prune
-- Rows older than every window are no use; deleted in small batches.
DELETE FROM mailroom.recipient_sends
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM mailroom.recipient_sends
    WHERE at < now() - make_interval(secs => %(horizon)s)
    LIMIT %(limit)s
))

-- name: reserve_send
-- The shared budget with the SES quota and the AIMD factor (0011): seconds to wait, or
-- infinity when the day's quota (less the margin) would be exceeded.
SELECT mailroom.reserve_send(%(bucket)s, %(rate)s, %(burst)s, %(wanted)s, %(auto)s,
                             %(margin)s, %(recovery)s)

-- name: rate_throttled
SELECT mailroom.rate_throttled(%(bucket)s, %(decrease)s, %(floor)s, %(recovery)s,
                               %(cooldown)s)

-- name: rate_quota
SELECT mailroom.rate_quota(%(bucket)s, %(max_rate)s, %(max_24h)s, %(sent_24h)s)

-- name: rate_state
-- The shared rate as every replica sees it, for the gauges.
SELECT quota_rate, mailroom.rate_factor(factor, cut_at, %(recovery)s), day_quota, day_sent
FROM mailroom.rate_buckets WHERE name = %(bucket)s

-- name: preflight_templates
-- `mailroom check --ses`: the templates of messages still to be sent, with their counts.
-- (No index of its own: an operator's occasional query, and the daemon's once at start.)
SELECT template, count(*)
FROM mailroom.outbox
WHERE queue = %(queue)s AND status IN ('pending', 'retrying', 'sending')
  AND template IS NOT NULL
GROUP BY template
ORDER BY template
-- ---- deliverability (sql/0009): events, delivery state, suppression list ----
-- events/reader.py, daemon/sender.py (through outbox.py), operator/admin.py's `show` and
-- operator/suppressions.py's `suppression` commands run these; the console may reuse them.

-- name: events_lock
-- Transient-bounce counting is serialised per address (issue 19, item 5): run in the
-- ingest's READ COMMITTED transaction BEFORE events_ingest, this waits for every other
-- transaction storing a transient bounce of the same addresses to commit, so that the
-- ingest statement's snapshot (taken after the wait) counts their bounces. Transaction-
-- scoped advisory locks, in a fixed order (no deadlock between two batches); a hash
-- collision only makes two addresses wait for each other. 1835365236: this lock's own
-- key space (caps_lock uses 1835102829).
SELECT pg_catalog.count(pg_catalog.pg_advisory_xact_lock(1835365236, k))
FROM (SELECT DISTINCT pg_catalog.hashtext(a) AS k
      FROM pg_catalog.unnest(%(lock_addresses)s::text[]) AS a ORDER BY k) AS s

-- name: events_ingest
-- One round trip for a batch of SES events. An event already stored (same event_key: a
-- redelivery, another replica, another path) is skipped, and so is its effect: nothing is
-- counted twice. Permanent bounces and complaints suppress their address (the reason is
-- decided in Python, mailroom.events.suppression_reason); transient and undetermined
-- bounces suppress once %(transient_count)s of them fell within the window. The existing
-- rows are read from the statement's snapshot, the new ones from "inserted": together each
-- bounce once. Returns the keys stored and the suppression reasons added.
-- A bounce or complaint stored before its key covered the bounce type and feedback id
-- (mailroom.events.Event.legacy_key) is found by its old key and its subtype: its
-- redelivery is a duplicate, a Permanent bounce after a stored Transient one is not.
-- Only recipients of our own messages (issue 19, item 3): an event naming a messageId that
-- mailroom sent (outbox.provider_message_id) is stored only for an address that message
-- had (to, cc, bcc, normalised); the others are dropped as "not_a_recipient". An event
-- for an unknown messageId (or none) is stored and suppresses, unless %(unknown)s is
-- 'ignore' (MAILROOM_EVENTS_UNKNOWN): then it is dropped as "unknown_message". Also
-- returns the keys and reasons of the events dropped.
-- Timestamps are clamped to [now - 30 days, now + 15 minutes] (docs/deliverability.md,
-- "Limits"): SQS keeps a message 14 days at most and clocks drift by seconds, so nothing
-- outside is an SES event as it happened; 1 BC or 9999 is never stored as such, and a
-- future bounce cannot stay in the transient-bounce window for ever. The key (computed
-- from the event's own timestamp) is unchanged by the clamp.
WITH input AS (
    SELECT e.event_key, e.provider_message_id, e.recipient, e.event_type, e.subtype,
           e.detail, e.suppress, e.legacy_key,
           greatest(least(e.occurred_at, now() + interval '15 minutes'),
                    now() - interval '30 days') AS occurred_at
    FROM unnest(
        %(keys)s::text[], %(provider_ids)s::text[], %(recipients)s::text[],
        %(types)s::text[], %(subtypes)s::text[], %(details)s::text[],
        %(occurred)s::timestamptz[], %(suppress)s::text[], %(legacy_keys)s::text[]
    ) AS e(event_key, provider_message_id, recipient, event_type, subtype, detail,
           occurred_at, suppress, legacy_key)
),
sent AS (
    SELECT o.provider_message_id, mailroom.normalize_address(a) AS recipient
    FROM mailroom.outbox AS o
    CROSS JOIN LATERAL unnest(o.to_addresses || o.cc_addresses || o.bcc_addresses) AS a
    WHERE o.provider_message_id = ANY (%(provider_ids)s::text[])
),
judged AS (
    SELECT input.*,
           CASE WHEN NOT EXISTS (SELECT FROM sent AS s
                                 WHERE s.provider_message_id = input.provider_message_id)
                    THEN CASE WHEN %(unknown)s::text = 'ignore' THEN 'unknown_message' END
                WHEN NOT EXISTS (SELECT FROM sent AS s
                                 WHERE s.provider_message_id = input.provider_message_id
                                   AND s.recipient = input.recipient)
                    THEN 'not_a_recipient'
           END AS dropped
    FROM input
),
inserted AS (
    INSERT INTO mailroom.events AS ev
        (event_key, provider_message_id, recipient, event_type, subtype, detail, occurred_at)
    SELECT DISTINCT ON (event_key) event_key, provider_message_id, recipient, event_type,
           subtype, detail, occurred_at
    FROM judged AS input
    WHERE input.dropped IS NULL AND NOT EXISTS (
        SELECT FROM mailroom.events AS old
        WHERE old.event_key = input.legacy_key AND old.subtype = input.subtype
    )
    ORDER BY event_key
    ON CONFLICT (event_key) DO NOTHING
    RETURNING ev.event_key, ev.recipient, ev.event_type, ev.subtype, ev.occurred_at
),
transient AS (
    SELECT i.recipient, count(*) + (
               SELECT count(*) FROM mailroom.events AS old
               WHERE old.recipient = i.recipient AND old.event_type = 'Bounce'
                 AND split_part(old.subtype, '/', 1) <> 'Permanent'
                 AND old.occurred_at > now() - make_interval(secs => %(transient_window)s)
           ) AS bounces
    FROM inserted AS i
    WHERE i.event_type = 'Bounce' AND split_part(i.subtype, '/', 1) <> 'Permanent'
      AND i.occurred_at > now() - make_interval(secs => %(transient_window)s)
    GROUP BY i.recipient
),
candidates AS (
    SELECT input.recipient AS address, input.suppress AS reason,
           input.event_type || ' ' || input.subtype AS detail, 1 AS preference
    FROM inserted JOIN input USING (event_key)
    WHERE input.suppress IS NOT NULL
    UNION ALL
    SELECT recipient, 'transient_bounces',
           bounces || ' transient bounces within '
               || (%(transient_window)s::float8 / 3600)::numeric(10, 1) || ' h', 2
    FROM transient
    WHERE bounces >= %(transient_count)s
),
suppressed AS (
    INSERT INTO mailroom.suppressions AS s (address, reason, detail)
    SELECT DISTINCT ON (address) address, reason, detail
    FROM candidates
    ORDER BY address, preference
    ON CONFLICT (address) DO NOTHING
    RETURNING s.reason
)
SELECT coalesce((SELECT array_agg(event_key) FROM inserted), ARRAY[]::text[]),
       coalesce((SELECT array_agg(reason) FROM suppressed), ARRAY[]::text[]),
       coalesce(d.keys, ARRAY[]::text[]), coalesce(d.reasons, ARRAY[]::text[])
FROM (SELECT array_agg(event_key) AS keys, array_agg(dropped) AS reasons
      FROM (SELECT DISTINCT event_key, dropped FROM judged WHERE dropped IS NOT NULL) AS j
     ) AS d

-- name: suppressed_among
-- The sender's one query per batch: which of these normalized recipients are suppressed,
-- why and since when (primary key lookups only).
SELECT address, reason, created_at
FROM mailroom.suppressions
WHERE address = ANY (%(addresses)b::text[])

-- name: reputation
-- Bounce and complaint rates over a sliding window of the last %(window)s recipients
-- whose fate is known (delivered or bounced), newest first by id: the id index, never a
-- scan of the whole history. Bounce rate: permanent bounces among them; complaint rate:
-- complaints since the window's first event, per recipient of the window.
WITH window_events AS MATERIALIZED (
    SELECT id, event_type, subtype
    FROM mailroom.events
    WHERE event_type IN ('Delivery', 'Bounce')
    ORDER BY id DESC
    LIMIT %(window)s
)
SELECT
    (SELECT count(*) FROM window_events),
    (SELECT count(*) FROM window_events
     WHERE event_type = 'Bounce' AND split_part(subtype, '/', 1) = 'Permanent'),
    (SELECT count(*) FROM mailroom.events
     WHERE event_type = 'Complaint'
       AND id >= coalesce((SELECT min(id) FROM window_events), 0))

-- name: message_events
-- One message's events, oldest first (the history `mailroom show` prints).
SELECT e.occurred_at, e.recipient, e.event_type, e.subtype, e.detail, e.received_at
FROM mailroom.events AS e
JOIN mailroom.outbox AS o ON o.provider_message_id = e.provider_message_id
WHERE o.id = %(id)s
ORDER BY e.occurred_at, e.id

-- name: message_delivery
SELECT d.delivery_state, d.delivery_at, d.delivery_reason
FROM mailroom.outbox AS o
CROSS JOIN LATERAL mailroom.delivery_summary(o.status, o.provider_message_id, o.last_error,
                                             o.updated_at, o.sent_at) AS d
WHERE o.id = %(id)s

-- name: suppression_list
-- Newest first; every filter optional (NULL: any); a page after a (created_at, id) cursor
-- (keyset on suppressions_newest_first, migration 0032: the thousandth page costs what the
-- first does).
SELECT address, reason, detail, created_at, created_by, id
FROM mailroom.suppressions
WHERE (%(reason)s::text IS NULL OR reason = %(reason)s::text)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(address)s::text IS NULL OR address = mailroom.normalize_address(%(address)s::text))
  AND (%(after_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(after_at)s::timestamptz, %(after_id)s::bigint))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s

-- name: suppression_count
-- How many entries suppression_list's filters match, on every page alike.
SELECT count(*)
FROM mailroom.suppressions
WHERE (%(reason)s::text IS NULL OR reason = %(reason)s::text)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(address)s::text IS NULL OR address = mailroom.normalize_address(%(address)s::text))

-- name: suppression_add
-- Adds the addresses not yet suppressed (an existing entry keeps its reason and date);
-- the function (migration 0020) appends the audit row.
SELECT suppressed
FROM mailroom.operator_suppress(%(addresses)s::text[], %(reason)s::text, %(details)s::text[],
    %(operator)s::text, %(via)s::text, %(action_id)s::uuid)

-- name: suppression_import
-- One page of the SES account-level list: address, reason (BOUNCE / COMPLAINT) and
-- SES's last update time, kept as the detail; audited as one 'suppress' row per page.
SELECT suppressed
FROM mailroom.operator_suppress(%(addresses)s::text[], 'ses_import',
    ARRAY(SELECT 'SES ' || r || ' (' || t || ')'
          FROM unnest(%(reasons)s::text[], %(updated)s::text[]) WITH ORDINALITY AS x(r, t, n)
          ORDER BY n),
    %(operator)s::text, %(via)s::text, %(action_id)s::uuid)

-- name: suppression_remove
-- The function (migration 0020) appends the audit row.
SELECT unsuppressed, was
FROM mailroom.operator_unsuppress(%(addresses)s::text[], %(operator)s::text, %(via)s::text,
    %(action_id)s::uuid)

-- ---- operator console: find, act, audit, queues, stats (migration 0010) ----
-- operator/find.py, operator/dead.py, operator/stats.py and the web console (mailroom.web) run
-- these; the console has no SQL of its own. Every action is a function (migration 0020)
-- that writes its mailroom.audit row in the same transaction as its change; the operator
-- has no DML on the outbox, attempts or audit, so a role without EXECUTE changes nothing.

-- name: operator_privilege
SELECT current_user::text, has_table_privilege(%(table)s::text, %(privilege)s::text)

-- name: operator_function_privilege
-- The operator's actions are functions (migration 0020); false, not an error, when the
-- function is missing (a database not migrated that far).
SELECT current_user::text,
       coalesce(has_function_privilege(to_regprocedure(%(function)s::text), 'EXECUTE'), false)

-- name: find_messages
-- Newest first (by id), a page after the cursor (ids below it). Every filter is optional
-- (NULL: any). A search by recipient is find_by_recipient. "scheduled" is a pending message
-- not yet due.
SELECT o.id, o.queue, o.status,
       coalesce(o.template, CASE WHEN o.raw_mime IS NOT NULL THEN 'raw' ELSE 'simple' END),
       o.to_addresses, o.attempts, o.created_at, o.next_attempt_at, o.sent_at,
       o.provider_message_id,
       left(substring(o.last_error FROM '^(gave up after [0-9]+ attempts: [^:]*|[^:]*)'), 200),
       -- the kind of token the message carries (0019), never the token
       (SELECT t.action FROM mailroom.message_token_actions AS t WHERE t.message_id = o.id),
       NULL::text[]
FROM mailroom.outbox AS o
WHERE (%(idempotency_key)s::text IS NULL OR o.idempotency_key = %(idempotency_key)s::text)
  AND (%(ses_id)s::text IS NULL OR o.provider_message_id = %(ses_id)s::text)
  AND (%(statuses)s::text[] IS NULL OR o.status = ANY (%(statuses)s::text[])
       OR ('scheduled' = ANY (%(statuses)s::text[])
           AND o.status = 'pending' AND o.next_attempt_at > now()))
  AND (%(template)s::text IS NULL OR coalesce(o.template,
       CASE WHEN o.raw_mime IS NOT NULL THEN 'raw' ELSE 'simple' END) = %(template)s::text)
  AND (%(queue)s::text IS NULL OR o.queue = %(queue)s::text)
  AND (%(since)s::timestamptz IS NULL OR o.created_at >= %(since)s::timestamptz)
  AND (%(before)s::timestamptz IS NULL OR o.created_at < %(before)s::timestamptz)
  AND (%(cursor)s::bigint IS NULL OR o.id < %(cursor)s::bigint)
ORDER BY o.id DESC
LIMIT %(limit)s

-- name: find_by_recipient
-- find_messages for one recipient search (0029, operator/search.py): exactly one of
-- %(address)s (exact), %(domain)s, %(prefix)s (a LIKE pattern, escaped) is given. Run
-- unprepared, so that each is planned with its values and the NULL branches fold away:
-- an index range of outbox_recipients_by_address / _by_domain, bounded by since / before,
-- newest first by (created_at, id) - the cursor's created_at comes with it - then each
-- message's row by its primary key for the other filters. The fields that matched (to, cc,
-- bcc) come last.
SELECT o.id, o.queue, o.status,
       coalesce(o.template, CASE WHEN o.raw_mime IS NOT NULL THEN 'raw' ELSE 'simple' END),
       o.to_addresses, o.attempts, o.created_at, o.next_attempt_at, o.sent_at,
       o.provider_message_id,
       left(substring(o.last_error FROM '^(gave up after [0-9]+ attempts: [^:]*|[^:]*)'), 200),
       (SELECT t.action FROM mailroom.message_token_actions AS t WHERE t.message_id = o.id),
       h.fields
FROM (
    SELECT r.created_at, r.message_id,
           -- unordered: an ORDER BY here would sort the index's rows again (find.py orders)
           array_agg(r.field) AS fields
    FROM mailroom.outbox_recipients AS r
    WHERE (%(address)s::text IS NULL OR r.address = %(address)s::text)
      AND (%(domain)s::text IS NULL OR r.domain = %(domain)s::text)
      AND (%(prefix)s::text IS NULL OR r.address LIKE %(prefix)s::text)
      AND (%(since)s::timestamptz IS NULL OR r.created_at >= %(since)s::timestamptz)
      AND (%(before)s::timestamptz IS NULL OR r.created_at < %(before)s::timestamptz)
      AND (%(cursor)s::bigint IS NULL
           OR (r.created_at, r.message_id) < (%(cursor_at)s::timestamptz, %(cursor)s::bigint))
    GROUP BY r.created_at, r.message_id
    -- the grouping follows this order, so a backward range of the index feeds it and the
    -- outer ORDER BY needs no sort: the LIMIT stops the scan
    ORDER BY r.created_at DESC, r.message_id DESC
) AS h
JOIN mailroom.outbox AS o ON o.id = h.message_id
WHERE (%(idempotency_key)s::text IS NULL OR o.idempotency_key = %(idempotency_key)s::text)
  AND (%(ses_id)s::text IS NULL OR o.provider_message_id = %(ses_id)s::text)
  AND (%(statuses)s::text[] IS NULL OR o.status = ANY (%(statuses)s::text[])
       OR ('scheduled' = ANY (%(statuses)s::text[])
           AND o.status = 'pending' AND o.next_attempt_at > now()))
  AND (%(template)s::text IS NULL OR coalesce(o.template,
       CASE WHEN o.raw_mime IS NOT NULL THEN 'raw' ELSE 'simple' END) = %(template)s::text)
  AND (%(queue)s::text IS NULL OR o.queue = %(queue)s::text)
ORDER BY h.created_at DESC, h.message_id DESC
LIMIT %(limit)s

-- name: message_created_at
-- The created_at of a recipient search's cursor (find_by_recipient pages by it).
SELECT o.created_at FROM mailroom.outbox AS o WHERE o.id = %(id)s::bigint

-- name: act_states
-- For `cancel` and `send-now ID...`: what each id is; whether it is a token email, and
-- whether it still carries its token (0019: the operator sees only that it does).
SELECT m.id, m.status, coalesce(starts_with(m.idempotency_key, 'mailroom-token:'), false),
       EXISTS (SELECT FROM mailroom.message_token_actions AS t WHERE t.message_id = m.id),
       m.next_attempt_at <= now()
FROM mailroom.outbox AS m
WHERE m.id = ANY (%(ids)s::bigint[])

-- name: cancel
-- Pending (scheduled included) and retrying messages end "cancelled", with the operator's
-- reason as their last error; a token's raw secret goes as for any final state. Rows a
-- daemon is sending are not touched. The function (migration 0020) checks the arguments
-- and appends the audit row; the operator has no UPDATE on the outbox.
SELECT cancelled_id
FROM mailroom.operator_cancel(%(ids)s::bigint[], %(audit_reason)s::text, %(operator)s::text,
    %(via)s::text, %(action_id)s::uuid)
ORDER BY cancelled_id

-- name: send_now
-- Waiting messages (a backoff or a schedule) become due at once; token emails without
-- their secret stay (they could not be signed). Returns each row's queue to wake it.
-- The function (migration 0020) checks the arguments and appends the audit row.
SELECT message_id, message_queue
FROM mailroom.operator_send_now(%(ids)s::bigint[], %(audit_reason)s::text, %(operator)s::text,
    %(via)s::text, %(action_id)s::uuid)
ORDER BY message_id

-- name: audit_of_message
SELECT at, actor, operator, via, action, messages, reason
FROM mailroom.audit
WHERE message_ids @> ARRAY[%(id)s::bigint]
ORDER BY at, id

-- name: audit_recent
-- One line per operator command: its batches summed.
SELECT min(at), min(actor), min(operator), min(via), min(action), sum(messages)::int,
       min(reason)
FROM mailroom.audit
GROUP BY action_id
ORDER BY min(at) DESC
LIMIT %(limit)s

-- name: prune_cancelled
-- Retention: delete one batch of messages cancelled longer ago than keep_seconds, oldest
-- first (outbox_cancelled index); their attempts cascade. The audit trail keeps the ids.
WITH doomed AS MATERIALIZED (
    SELECT id
    FROM mailroom.outbox
    WHERE queue = %(queue)s AND status = 'cancelled'
      AND updated_at < now() - make_interval(secs => %(keep_seconds)s)
    ORDER BY updated_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
deleted AS (
    DELETE FROM mailroom.outbox AS m
    USING doomed
    WHERE m.id = doomed.id AND m.status = 'cancelled'
    RETURNING 1
)
SELECT count(*) FROM deleted

-- name: queues_overview
-- Every queue with messages: live depth by status, due now, the oldest due; dead and
-- cancelled messages; sent and dead in the last hour. Never a scan of the outbox: the
-- queue names by a skip over each partial index (outbox_live 0029, outbox_leases 0001,
-- outbox_sent_at 0003, outbox_dead 0002, outbox_cancelled 0010), then per queue
-- index-only counts: its waiting rows (outbox_live holds their status), its leases, its
-- dead and cancelled rows, and the last hour's range of outbox_sent_at. The total of sent
-- messages is not counted: it is the size of the history (docs/cli.md).
WITH RECURSIVE waiting (queue) AS (
    SELECT min(o.queue) FROM mailroom.outbox AS o WHERE o.status IN ('pending', 'retrying')
    UNION ALL
    SELECT (SELECT min(o.queue) FROM mailroom.outbox AS o
            WHERE o.status IN ('pending', 'retrying') AND o.queue > l.queue)
    FROM waiting AS l WHERE l.queue IS NOT NULL
), leased (queue) AS (
    SELECT min(o.queue) FROM mailroom.outbox AS o WHERE o.status = 'sending'
    UNION ALL
    SELECT (SELECT min(o.queue) FROM mailroom.outbox AS o
            WHERE o.status = 'sending' AND o.queue > l.queue)
    FROM leased AS l WHERE l.queue IS NOT NULL
), sent (queue) AS (
    SELECT min(o.queue) FROM mailroom.outbox AS o WHERE o.status = 'sent'
    UNION ALL
    SELECT (SELECT min(o.queue) FROM mailroom.outbox AS o
            WHERE o.status = 'sent' AND o.queue > l.queue)
    FROM sent AS l WHERE l.queue IS NOT NULL
), dead (queue) AS (
    SELECT min(o.queue) FROM mailroom.outbox AS o WHERE o.status = 'dead'
    UNION ALL
    SELECT (SELECT min(o.queue) FROM mailroom.outbox AS o
            WHERE o.status = 'dead' AND o.queue > l.queue)
    FROM dead AS l WHERE l.queue IS NOT NULL
), cancelled (queue) AS (
    SELECT min(o.queue) FROM mailroom.outbox AS o WHERE o.status = 'cancelled'
    UNION ALL
    SELECT (SELECT min(o.queue) FROM mailroom.outbox AS o
            WHERE o.status = 'cancelled' AND o.queue > l.queue)
    FROM cancelled AS l WHERE l.queue IS NOT NULL
), names (queue) AS (
    SELECT queue FROM waiting UNION SELECT queue FROM leased UNION SELECT queue FROM sent
    UNION SELECT queue FROM dead UNION SELECT queue FROM cancelled
)
SELECT n.queue, w.due, w.scheduled, w.retrying, l.sending, d.dead, c.cancelled,
       coalesce(extract(epoch FROM now() - w.oldest_due), 0)::float8, s.sent_last_hour,
       d.dead_last_hour
FROM names AS n
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE o.status = 'pending' AND o.next_attempt_at <= now()) AS due,
           count(*) FILTER (WHERE o.status = 'pending' AND o.next_attempt_at > now())
               AS scheduled,
           count(*) FILTER (WHERE o.status = 'retrying') AS retrying,
           min(o.next_attempt_at) FILTER (WHERE o.next_attempt_at <= now()) AS oldest_due
    FROM mailroom.outbox AS o
    WHERE o.queue = n.queue AND o.status IN ('pending', 'retrying')
) AS w
CROSS JOIN LATERAL (
    SELECT count(*) AS sending
    FROM mailroom.outbox AS o WHERE o.queue = n.queue AND o.status = 'sending'
) AS l
CROSS JOIN LATERAL (
    SELECT count(*) AS dead,
           count(*) FILTER (WHERE o.updated_at > now() - interval '1 hour') AS dead_last_hour
    FROM mailroom.outbox AS o WHERE o.queue = n.queue AND o.status = 'dead'
) AS d
CROSS JOIN LATERAL (
    SELECT count(*) AS cancelled
    FROM mailroom.outbox AS o WHERE o.queue = n.queue AND o.status = 'cancelled'
) AS c
CROSS JOIN LATERAL (
    SELECT count(*) AS sent_last_hour
    FROM mailroom.outbox AS o
    WHERE o.queue = n.queue AND o.status = 'sent' AND o.sent_at > now() - interval '1 hour'
) AS s
WHERE n.queue IS NOT NULL
ORDER BY n.queue

-- name: throughput
-- Tries per minute over the last %(minutes)s minutes, by outcome (sent, retry, dead), from
-- the attempts log (attempts_at BRIN index). Minutes without tries are absent.
SELECT date_trunc('minute', a.at) AS minute,
       count(*) FILTER (WHERE a.outcome = 'sent'),
       count(*) FILTER (WHERE a.outcome = 'retry'),
       count(*) FILTER (WHERE a.outcome = 'dead')
FROM mailroom.attempts AS a
WHERE a.at > date_trunc('minute', now()) - make_interval(mins => %(minutes)s)
  AND (%(queue)s::text IS NULL
       OR EXISTS (SELECT FROM mailroom.outbox AS o
                  WHERE o.id = a.message_id AND o.queue = %(queue)s::text))
GROUP BY 1
ORDER BY 1

-- name: stats_by_template
-- Outcomes of the tries in [since, until), per template.
SELECT coalesce(o.template, CASE WHEN o.raw_mime IS NOT NULL THEN 'raw' ELSE 'simple' END),
       count(*) FILTER (WHERE a.outcome = 'sent'),
       count(*) FILTER (WHERE a.outcome = 'retry'),
       count(*) FILTER (WHERE a.outcome = 'dead')
FROM mailroom.attempts AS a
JOIN mailroom.outbox AS o ON o.id = a.message_id
WHERE a.at >= %(since)s::timestamptz AND a.at < %(until)s::timestamptz
  AND (%(queue)s::text IS NULL OR o.queue = %(queue)s::text)
GROUP BY 1
ORDER BY 2 DESC, 1

-- name: stats_by_reason
-- Failed tries in [since, until) by outcome (retry, dead) and reason: the error's head.
SELECT a.outcome,
       coalesce(left(substring(a.error FROM
           '^(gave up after [0-9]+ attempts: [^:]*|[^:]*)'), 200), '(none)'),
       count(*)
FROM mailroom.attempts AS a
JOIN mailroom.outbox AS o ON o.id = a.message_id
WHERE a.at >= %(since)s::timestamptz AND a.at < %(until)s::timestamptz
  AND a.outcome IN ('retry', 'dead')
  AND (%(queue)s::text IS NULL OR o.queue = %(queue)s::text)
GROUP BY 1, 2
ORDER BY 3 DESC, 1, 2
LIMIT %(limit)s

-- ---------------------------------------------------------------- applications (issue 15)
-- mailroom.client runs these through any driver (psycopg 3, psycopg2, SQLAlchemy, Django):
-- plain %(name)s parameters, no {identifier} slots.

-- name: app_status
-- Every column message_status() returns, by name: later migrations may add some.
SELECT * FROM mailroom.message_status(%(id)s::bigint)

-- name: app_cancel
SELECT mailroom.cancel(%(id)s::bigint)

-- ------------------------------------------------ daemons, deliverability stats, events
-- retention (issue 14b; migration 0013). daemon/presence.py (the daemons' rows), operator/stats.py
-- (`stats`) and daemon/retention.py run these.

-- name: daemon_heartbeat
-- A daemon's row about itself, written at start and at every gauge refresh: one
-- statement, which also forgets rows of daemons not seen for %(forget_seconds)s (they
-- died without a clean shutdown). paused_until is computed here from the seconds left,
-- on the database's clock like every other time operators see.
WITH forgotten AS (
    DELETE FROM mailroom.daemons
    WHERE seen_at < now() - make_interval(secs => %(forget_seconds)s)
      AND worker <> %(worker)s
)
INSERT INTO mailroom.daemons AS d
    (worker, queue, version, mode, transport, started_at, seen_at, paused_until,
     pause_reason, send_rate, send_rate_in_force)
VALUES (
    %(worker)s, %(queue)s, %(version)s, %(mode)s, %(transport)s, %(started_at)s, now(),
    CASE WHEN %(pause_seconds)s::float8 > 0
         THEN now() + make_interval(secs => %(pause_seconds)s::float8) END,
    CASE WHEN %(pause_seconds)s::float8 > 0 THEN %(pause_reason)s::text END,
    %(send_rate)s, %(send_rate_in_force)s
)
ON CONFLICT (worker) DO UPDATE
SET queue = excluded.queue, version = excluded.version, mode = excluded.mode,
    transport = excluded.transport, started_at = excluded.started_at,
    seen_at = excluded.seen_at, paused_until = excluded.paused_until,
    pause_reason = excluded.pause_reason, send_rate = excluded.send_rate,
    send_rate_in_force = excluded.send_rate_in_force

-- name: daemon_leave
-- A clean shutdown: the daemon's row goes (only its own run's: a successor that took
-- the same worker name in the meantime keeps its row).
DELETE FROM mailroom.daemons WHERE worker = %(worker)s AND started_at = %(started_at)s

-- name: status_daemons
-- The daemons of a queue (NULL: every queue) as they last reported, with the seconds
-- since then and the pause still to run, on the database's clock.
SELECT worker, queue, version, mode, transport, started_at, seen_at,
       extract(epoch FROM now() - seen_at)::float8,
       CASE WHEN paused_until > now() THEN extract(epoch FROM paused_until - now())::float8 END,
       CASE WHEN paused_until > now() THEN paused_until END,
       CASE WHEN paused_until > now() THEN pause_reason END,
       send_rate, send_rate_in_force
FROM mailroom.daemons
WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text
ORDER BY queue, worker

-- name: stats_events_by_template
-- Bounces and complaints that occurred in [since, until), per template of the message
-- they belong to (joined by the SES message id); events of mail mailroom no longer has
-- (pruned) or never sent count under "(not in the outbox)" when no queue is asked for.
-- events_occurred_at gives the range, the provider_message_id indexes the join.
SELECT coalesce(o.template, CASE WHEN o.id IS NULL THEN '(not in the outbox)'
                                 WHEN o.raw_mime IS NOT NULL THEN 'raw' ELSE 'simple' END),
       e.event_type, e.subtype, count(*)
FROM mailroom.events AS e
LEFT JOIN mailroom.outbox AS o ON o.provider_message_id = e.provider_message_id
WHERE e.event_type IN ('Bounce', 'Complaint')
  AND e.occurred_at >= %(since)s::timestamptz AND e.occurred_at < %(until)s::timestamptz
  AND (%(queue)s::text IS NULL OR o.queue = %(queue)s::text)
GROUP BY 1, 2, 3
ORDER BY 4 DESC, 1, 2, 3

-- name: prune_events
-- Retention: delete one batch of SES events that occurred longer ago than keep_seconds
-- (at least a day), oldest first (events_occurred_at index), through the definer function
-- of 0013: the daemon has no DELETE on the events themselves.
SELECT mailroom.prune_events(%(keep_seconds)s::float8, %(limit)s::int)

-- name: lifecycle_unowned
-- Lifecycle accounts from before lifecycle 1004 whose owner could not be derived: visible
-- to no application until the schema owner assigns them (mailroom.assign_account_owner).
SELECT pg_catalog.count(*) FROM mailroom.accounts AS a WHERE a.owner IS NULL

-- name: schema_foreign_bindings
-- `mailroom check --schema`: every object of the mailroom schema (constraint, default,
-- index, view rule, trigger, function, policy, type, column) that depends on a function,
-- operator, type or collation outside pg_catalog and mailroom: bound, when it was
-- created, by a search_path that put another schema first (issue 18; 0024 rebuilds them).
-- The catalogs are readable by every role; qualified throughout, whatever the path.
WITH dep AS (
    SELECT d.classid, d.objid, d.objsubid, d.refclassid, d.refobjid,
           CASE
               WHEN d.classid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_constraint'::pg_catalog.regclass THEN
                   (SELECT c.connamespace FROM pg_catalog.pg_constraint AS c
                    WHERE c.oid OPERATOR(pg_catalog.=) d.objid)
               WHEN d.classid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN
                   (SELECT r.relnamespace FROM pg_catalog.pg_attrdef AS a
                    JOIN pg_catalog.pg_class AS r ON r.oid OPERATOR(pg_catalog.=) a.adrelid
                    WHERE a.oid OPERATOR(pg_catalog.=) d.objid)
               WHEN d.classid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_class'::pg_catalog.regclass THEN
                   (SELECT r.relnamespace FROM pg_catalog.pg_class AS r
                    WHERE r.oid OPERATOR(pg_catalog.=) d.objid)
               WHEN d.classid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN
                   (SELECT r.relnamespace FROM pg_catalog.pg_rewrite AS w
                    JOIN pg_catalog.pg_class AS r ON r.oid OPERATOR(pg_catalog.=) w.ev_class
                    WHERE w.oid OPERATOR(pg_catalog.=) d.objid)
               WHEN d.classid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_trigger'::pg_catalog.regclass THEN
                   (SELECT r.relnamespace FROM pg_catalog.pg_trigger AS t
                    JOIN pg_catalog.pg_class AS r ON r.oid OPERATOR(pg_catalog.=) t.tgrelid
                    WHERE t.oid OPERATOR(pg_catalog.=) d.objid)
               WHEN d.classid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_policy'::pg_catalog.regclass THEN
                   (SELECT r.relnamespace FROM pg_catalog.pg_policy AS p
                    JOIN pg_catalog.pg_class AS r ON r.oid OPERATOR(pg_catalog.=) p.polrelid
                    WHERE p.oid OPERATOR(pg_catalog.=) d.objid)
               WHEN d.classid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_proc'::pg_catalog.regclass THEN
                   (SELECT p.pronamespace FROM pg_catalog.pg_proc AS p
                    WHERE p.oid OPERATOR(pg_catalog.=) d.objid)
               WHEN d.classid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_type'::pg_catalog.regclass THEN
                   (SELECT t.typnamespace FROM pg_catalog.pg_type AS t
                    WHERE t.oid OPERATOR(pg_catalog.=) d.objid)
           END AS namespace,
           CASE
               WHEN d.refclassid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_proc'::pg_catalog.regclass THEN
                   (SELECT p.pronamespace FROM pg_catalog.pg_proc AS p
                    WHERE p.oid OPERATOR(pg_catalog.=) d.refobjid)
               WHEN d.refclassid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_operator'::pg_catalog.regclass THEN
                   (SELECT o.oprnamespace FROM pg_catalog.pg_operator AS o
                    WHERE o.oid OPERATOR(pg_catalog.=) d.refobjid)
               WHEN d.refclassid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_type'::pg_catalog.regclass THEN
                   (SELECT t.typnamespace FROM pg_catalog.pg_type AS t
                    WHERE t.oid OPERATOR(pg_catalog.=) d.refobjid)
               WHEN d.refclassid OPERATOR(pg_catalog.=)
                   'pg_catalog.pg_collation'::pg_catalog.regclass THEN
                   (SELECT c.collnamespace FROM pg_catalog.pg_collation AS c
                    WHERE c.oid OPERATOR(pg_catalog.=) d.refobjid)
           END AS refnamespace
    FROM pg_catalog.pg_depend AS d
)
SELECT DISTINCT
       pg_catalog.pg_describe_object(dep.classid, dep.objid, dep.objsubid) AS object,
       pg_catalog.pg_describe_object(dep.refclassid, dep.refobjid, 0) AS depends_on
FROM dep
JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) dep.namespace
JOIN pg_catalog.pg_namespace AS rn ON rn.oid OPERATOR(pg_catalog.=) dep.refnamespace
WHERE n.nspname OPERATOR(pg_catalog.=) 'mailroom'::pg_catalog.name
  AND rn.nspname OPERATOR(pg_catalog.<>) ALL (
      ARRAY['pg_catalog', 'mailroom']::pg_catalog.name[]
  )
ORDER BY 1, 2

-- ================================================================ queue pauses, alarms
-- (issue 22; migration 0027). operator/queues.py and operator/alarms.py run these; the
-- console and `mailroom queue pause | resume` call them.

-- name: queue_pauses
-- The queues an operator has paused, with who, when and why.
SELECT queue, paused_at, paused_by, operator, note,
       extract(epoch FROM now() - paused_at)::float8
FROM mailroom.queue_pauses
WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text
ORDER BY queue

-- name: queue_pause
-- The function (migration 0027) appends the audit row; false: it was paused already.
SELECT mailroom.operator_pause_queue(%(queue)s::text, %(audit_reason)s::text,
    %(operator)s::text, %(via)s::text, %(action_id)s::uuid)

-- name: queue_resume
SELECT mailroom.operator_resume_queue(%(queue)s::text, %(audit_reason)s::text,
    %(operator)s::text, %(via)s::text, %(action_id)s::uuid)

-- name: leases_all
-- Every queue's leases by holder (outbox_leases, a partial index on status 'sending'):
-- the console matches each holder against the daemons' rows to find orphaned leases.
SELECT queue, locked_by, count(*), extract(epoch FROM min(locked_until) - now())::float8
FROM mailroom.outbox
WHERE status = 'sending'
GROUP BY queue, locked_by
ORDER BY queue, locked_by

-- name: dead_reasons_all
-- The commonest dead-letter reasons over every queue (status_dead_reasons for one).
SELECT queue, reason, count(*) AS messages
FROM (
    SELECT queue, coalesce(left(substring(last_error FROM
               '^(gave up after [0-9]+ attempts: [^:]*|[^:]*)'), 200), '(none)') AS reason
    FROM mailroom.outbox
    WHERE status = 'dead'
) AS dead
GROUP BY queue, reason
ORDER BY messages DESC, queue, reason
LIMIT %(limit)s

-- name: message_content
-- A message's content for the console's preview (operator/content.py hides secrets and
-- masks addresses): subject, text, HTML, template data, and the size of a raw MIME body.
SELECT subject, body_text, body_html, template_data, octet_length(raw_mime)
FROM mailroom.outbox
WHERE id = %(id)s

-- name: dead_page
-- Newest dead letters first, a page after a (died, id) cursor: keyset paging on the
-- outbox_dead index (`dead list`, the console's dead-letter page). Every filter is optional
-- (NULL: any).
SELECT id, queue,
       coalesce(template, CASE WHEN raw_mime IS NOT NULL THEN 'raw' ELSE 'simple' END),
       to_addresses, attempts, updated_at,
       coalesce(left(substring(last_error FROM
           '^(gave up after [0-9]+ attempts: [^:]*|[^:]*)'), 200), '(none)'),
       last_error
FROM mailroom.outbox
WHERE status = 'dead'
  AND mailroom.dead_letter_matches(outbox, %(ids)s::bigint[], %(queue)s::text,
      %(template)s::text, %(reason)s::text, %(since)s::timestamptz, %(before)s::timestamptz)
  AND (%(after_at)s::timestamptz IS NULL
       OR (updated_at, id) < (%(after_at)s::timestamptz, %(after_id)s::bigint))
ORDER BY updated_at DESC, id DESC
LIMIT %(limit)s

-- name: suppression_remove_noted
-- suppression_remove with a note for the audit row (migration 0027).
SELECT unsuppressed, was
FROM mailroom.operator_unsuppress(%(addresses)s::text[], %(operator)s::text, %(via)s::text,
    %(action_id)s::uuid, %(audit_reason)s::text)

-- ------------------------------------------------ the changes feed (issue 23; migration 0030)
-- mailroom/feed.py runs these on the application's connection, whatever its search_path:
-- every name is qualified (the functions decide the caller from session_user).

-- name: changes_since
SELECT * FROM mailroom.changes_since(%(cursor)s::bigint, %(max)s::integer)

-- name: changes_listen
SELECT mailroom.changes_listen()

-- name: changes_cursor
SELECT mailroom.changes_cursor(%(consumer)s::pg_catalog.text)

-- name: changes_ack
SELECT mailroom.changes_ack(%(consumer)s::pg_catalog.text, %(upto)s::bigint)

-- name: prune_changes
-- The daemon's retention of the changes feed (daemon/retention.py): the oldest first, never
-- younger than seven days (the function's floor).
SELECT mailroom.prune_changes(%(keep_seconds)s::float8, %(limit)s::int)
