-- Every query mailroom runs, each under a "-- name: NAME" header. outbox.py is the only
-- module that executes them; migrate.py uses the migration bookkeeping ones.
-- Parameters are psycopg named placeholders; {identifier} slots are filled with
-- psycopg.sql.Identifier, never with string formatting.

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
          m.priority, m.next_attempt_at
)
-- RETURNING comes in the table's order: sorted here, a batch's calls start in claim order
-- (highest priority, then oldest due), however big the batch (claims grow under a backlog)
SELECT id, attempts, max_attempts, from_address, to_addresses, cc_addresses, bcc_addresses,
       reply_to_addresses, config_set, template, template_data, subject, body_text,
       body_html, raw_mime, created
FROM claimed
ORDER BY priority DESC, next_attempt_at, id

-- name: record
-- Apply a whole batch's outcomes in one round trip and append one attempt row per try.
-- Only the lease holder may write, except that "sent" is always worth recording: it
-- stops a second daemon that reclaimed an expired lease from sending again, and a
-- message reaped to dead while SES was accepting it was in fact delivered.
-- NULL statuses, refunds, delays, errors and attempt outcomes mean "all sent": unnest pads
-- a NULL array with NULLs, and the coalesces below supply the sent defaults.
WITH outcome AS (
    SELECT id, coalesce(status, 'sent') AS status, coalesce(refund, 0) AS refund,
           coalesce(delay, 0) AS delay, provider_id, error,
           CASE WHEN status IS NULL THEN 'sent' ELSE attempt_outcome END AS attempt_outcome
    FROM unnest(
        %(ids)s::bigint[], %(statuses)s::text[], %(refunds)s::int[], %(delays)s::float8[],
        %(provider_ids)s::text[], %(errors)s::text[], %(attempt_outcomes)s::text[]
    ) AS o(id, status, refund, delay, provider_id, error, attempt_outcome)
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
        -- a raw token secret to sign stays only as long as the message may be sent
        template_data = CASE WHEN o.status IN ('sent', 'dead') THEN m.template_data - '$sign'
                             ELSE m.template_data END,
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
),
-- A holder whose lease expired while it was still sending: the reaper logged its try as
-- "lease_expired" (naming this holder); that row becomes this "sent" one, keeping the
-- try's number: one try, one row. The partial index attempts_lease_expired keeps this
-- probe cheap: it is almost always empty.
superseded AS (
    UPDATE mailroom.attempts AS a
    SET outcome = 'sent', provider_message_id = o.provider_id, error = NULL,
        worker = %(owner)s, at = now()
    FROM updated AS u
    JOIN outcome AS o USING (id)
    WHERE o.attempt_outcome = 'sent' AND a.outcome = 'lease_expired' AND a.message_id = u.id
      AND a.error = 'lease expired: ' || %(owner)s || ' did not record an outcome'
    RETURNING a.message_id
),
logged AS (
    INSERT INTO mailroom.attempts (message_id, attempt, outcome, provider_message_id, error, worker)
    SELECT u.id, u.attempts + o.refund, o.attempt_outcome, o.provider_id, o.error, %(owner)s
    FROM updated AS u
    JOIN outcome AS o USING (id)
    WHERE o.attempt_outcome IS NOT NULL
      AND u.id NOT IN (SELECT message_id FROM superseded)
)
SELECT coalesce(array_agg(id), ARRAY[]::bigint[]) FROM updated

-- name: reap_expired
-- Leases whose holder died: back to due at once, or dead when the crashed try was the
-- last one allowed (a message that crashes the daemon must not loop for ever).
WITH expired AS MATERIALIZED (
    SELECT id
    FROM mailroom.outbox
    WHERE queue = %(queue)s AND status = 'sending' AND locked_until < now()
    ORDER BY locked_until
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
),
updated AS (
    UPDATE mailroom.outbox AS m
    SET status = CASE WHEN m.attempts >= m.max_attempts THEN 'dead' ELSE 'retrying' END,
        template_data = CASE WHEN m.attempts >= m.max_attempts THEN m.template_data - '$sign'
                             ELSE m.template_data END,
        next_attempt_at = now(),
        last_error = 'lease expired: ' || m.locked_by || ' did not record an outcome',
        locked_by = NULL,
        locked_until = NULL,
        updated_at = now()
    FROM expired
    WHERE m.id = expired.id
    RETURNING m.id, m.attempts, m.last_error
),
logged AS (
    INSERT INTO mailroom.attempts (message_id, attempt, outcome, error, worker)
    SELECT id, attempts, 'lease_expired', last_error, %(owner)s FROM updated
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
SELECT pg_advisory_lock(7283946150021)

-- name: migrations_unlock
SELECT pg_advisory_unlock(7283946150021)

-- name: migrations_bootstrap
CREATE SCHEMA IF NOT EXISTS mailroom;
CREATE TABLE IF NOT EXISTS mailroom.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
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
SELECT to_regclass('mailroom.schema_migrations') IS NOT NULL

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

-- name: consume_token
-- Check and consume a token in one round trip; says why when it cannot.
WITH found AS (
    SELECT id, account_id, consumed_at, expires_at, code
    FROM mailroom.tokens
    WHERE secret = %(secret)s AND action = %(action)s::mailroom.token_action
    FOR UPDATE
),
consumed AS (
    UPDATE mailroom.tokens AS t
    SET consumed_at = now()
    FROM found
    WHERE t.id = found.id
      AND found.consumed_at IS NULL
      AND found.expires_at > now()
      AND (%(code)s::text IS NULL OR found.code = %(code)s::text)
    RETURNING t.account_id
)
SELECT
    (SELECT account_id FROM consumed),
    (SELECT CASE
        WHEN consumed_at IS NOT NULL THEN 'already consumed'
        WHEN expires_at <= now() THEN 'expired'
        ELSE 'wrong code'
     END FROM found),
    EXISTS (SELECT FROM found)

-- name: request_password_recovery
-- A recovery token (and so its email) for an active account found by login or email.
INSERT INTO mailroom.tokens (account_id, action)
SELECT id, 'password_recovery'
FROM mailroom.accounts
WHERE (login = %(who)s OR email = %(who)s) AND status = 'active'
RETURNING id

-- ---- operator commands and retention ----
-- admin.py (the `mailroom status | show | dead | send-test` commands) and retention.py
-- (the daemon's pruning task) run these. A dead letter's "reason" is the head of its
-- last_error: the error code, with the "gave up after N attempts: " prefix when retries
-- ran out; it is always a substring of last_error, so `dead list --reason` finds it.

-- name: status_overview
-- Depth by status through the partial indexes (sent: outbox_sent_at), due work, the age
-- of the oldest due message, and the send rate.
SELECT
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'pending'),
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'retrying'),
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'sending'),
    (SELECT count(*) FROM mailroom.outbox WHERE queue = %(queue)s AND status = 'sent'),
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
-- One message without its content: the template data's keys only (a "$sign" block holds
-- a raw token secret), no bodies.
SELECT id, queue, status, priority, from_address, to_addresses, cc_addresses,
       bcc_addresses, reply_to_addresses, config_set,
       coalesce(template, CASE WHEN raw_mime IS NOT NULL THEN 'raw' ELSE 'simple' END),
       subject,
       coalesce((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(template_data) AS k),
                ARRAY[]::text[]),
       idempotency_key, attempts, max_attempts, created_at, not_before, next_attempt_at,
       locked_by, locked_until, updated_at, sent_at, provider_message_id, last_error
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

-- name: dead_list
-- Newest dead letters first (outbox_dead index). Every filter is optional (NULL: any).
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
ORDER BY updated_at DESC, id DESC
LIMIT %(limit)s

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
-- The batch is MATERIALIZED so that its LIMIT holds (see prune_sent).
WITH batch AS MATERIALIZED (
    SELECT id, updated_at
    FROM mailroom.outbox
    WHERE status = 'dead'
      AND NOT coalesce(starts_with(idempotency_key, 'mailroom-token:'), false)
      AND updated_at <= %(snapshot)s::timestamptz
      AND (updated_at, id) > (%(after_at)s::timestamptz, %(after_id)s::bigint)
      AND mailroom.dead_letter_matches(outbox, %(ids)s::bigint[], %(queue)s::text,
          %(template)s::text, %(reason)s::text, %(since)s::timestamptz, %(before)s::timestamptz)
    ORDER BY updated_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE mailroom.outbox AS m
SET status = 'pending',
    attempts = 0,
    next_attempt_at = now(),
    locked_by = NULL,
    locked_until = NULL,
    updated_at = now()
FROM batch
WHERE m.id = batch.id AND m.status = 'dead'
RETURNING m.id, m.queue, batch.updated_at

-- name: dead_purge_batch
-- Delete one batch of matching dead letters (their attempts cascade), in (updated_at, id)
-- order after the cursor. Returns each row's id and updated_at (the cursor).
WITH batch AS MATERIALIZED (
    SELECT id, updated_at
    FROM mailroom.outbox
    WHERE status = 'dead'
      AND updated_at <= %(snapshot)s::timestamptz
      AND (updated_at, id) > (%(after_at)s::timestamptz, %(after_id)s::bigint)
      AND mailroom.dead_letter_matches(outbox, %(ids)s::bigint[], %(queue)s::text,
          %(template)s::text, %(reason)s::text, %(since)s::timestamptz, %(before)s::timestamptz)
    ORDER BY updated_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM mailroom.outbox AS m
USING batch
WHERE m.id = batch.id AND m.status = 'dead'
RETURNING m.id, batch.updated_at

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
    ('UPDATE on mailroom.outbox', has_table_privilege('mailroom.outbox', 'UPDATE')),
    ('DELETE on mailroom.outbox', has_table_privilege('mailroom.outbox', 'DELETE')),
    ('INSERT on mailroom.attempts', has_table_privilege('mailroom.attempts', 'INSERT')),
    ('UPDATE on mailroom.attempts', has_table_privilege('mailroom.attempts', 'UPDATE')),
    ('UPDATE on mailroom.rate_buckets', has_table_privilege('mailroom.rate_buckets', 'UPDATE')),
    ('EXECUTE on mailroom.reserve_rate()', has_function_privilege(
        'mailroom.reserve_rate(text, double precision, double precision, double precision)',
        'EXECUTE'))
) AS p(what, held)
WHERE NOT p.held
