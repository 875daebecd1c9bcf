-- Every SQL statement pr-review runs, by name. Loaded once by prreview/sql/__init__.py.
-- Status changes write their own event (trigger pr_review_job_event, migration 0003): no statement
-- here inserts a lifecycle event by hand.

-- === The job lifecycle (prreview/lifecycle.py) ==================================================

-- name: submit
-- A new review, unless one is already active for the same key, the queue is full, or its
-- submitter is over a quota (then nothing is returned and the caller tells these apart).
INSERT INTO jobs (id, pr_url, repo, number, options, options_hash, job_key, submitted_by, head_sha, installation_id)
SELECT %(id)s, %(pr_url)s, %(repo)s, %(number)s, %(options)s, %(options_hash)s, %(key)s, %(submitted_by)s,
       %(head_sha)s, %(installation_id)s
WHERE (SELECT count(*) FROM jobs WHERE status = 'queued') < %(max_queued)s
  AND coalesce(pr_review_quota_left(%(submitted_by)s, %(max_active)s::int, %(max_per_hour)s::int) > 0, true)
ON CONFLICT (job_key) WHERE status IN ('queued', 'running') DO NOTHING
RETURNING *;

-- name: submitter_usage
-- What a submitter has queued or running, and submitted in the last hour (its quotas).
SELECT
    (SELECT count(*) FROM jobs WHERE submitted_by = %(submitted_by)s AND status IN ('queued', 'running')) AS active,
    count(*) AS last_hour,
    extract(epoch FROM min(created_at) + interval '1 hour' - now()) AS window_frees_in_s
FROM jobs WHERE submitted_by = %(submitted_by)s AND created_at > now() - interval '1 hour';

-- name: submit_batch
-- A batch in one statement: the batch, a job per accepted URL (an active job of the same key is
-- reused, and so is `reuse`: a succeeded review the caller found still current; a PR listed twice
-- gets one job), one item per URL in order (a refused URL keeps its error), and the bounds: URLs
-- beyond the submitter's quotas (as for one submit) get `quota_exceeded`, URLs beyond the room
-- left in the queue `queue_full`.
WITH batch AS (
    INSERT INTO batches (id, options, submitted_by) VALUES (%(batch_id)s, %(options)s, %(submitted_by)s) RETURNING id
), item AS (
    SELECT * FROM jsonb_to_recordset(%(items)s::jsonb)
        AS i(position int, url text, pr_url text, repo text, number int, key text, id uuid, error jsonb, reuse uuid)
), reused AS (
    SELECT r.* FROM jobs r WHERE r.id IN (SELECT reuse FROM item) AND r.status = 'succeeded'
), active AS (
    SELECT a.* FROM jobs a WHERE a.job_key IN (SELECT key FROM item) AND a.status IN ('queued', 'running')
), fresh AS (
    SELECT DISTINCT ON (i.key) i.*
    FROM item i
    WHERE i.error IS NULL AND NOT EXISTS (SELECT 1 FROM active a WHERE a.job_key = i.key)
      AND NOT EXISTS (SELECT 1 FROM reused r WHERE r.id = i.reuse)
    ORDER BY i.key, i.position
), room AS (  -- quota NULL: the submitter has none (least() skips NULLs)
    SELECT %(max_queued)s - (SELECT count(*) FROM jobs WHERE status = 'queued') AS queue,
           pr_review_quota_left(%(submitted_by)s, %(max_active)s::int, %(max_per_hour)s::int) AS quota
), ranked AS (
    SELECT f.*, row_number() OVER (ORDER BY f.position) AS rank FROM fresh f
), admitted AS (
    SELECT r.* FROM ranked r, room
    WHERE r.rank <= least(room.queue, room.quota)
), created AS (
    INSERT INTO jobs (id, pr_url, repo, number, options, options_hash, job_key, submitted_by)
    SELECT id, pr_url, repo, number, %(options)s, %(options_hash)s, key, %(submitted_by)s FROM admitted
    ON CONFLICT (job_key) WHERE status IN ('queued', 'running') DO NOTHING
    RETURNING *
), resolved AS (
    SELECT i.position, i.url, coalesce(c.id, a.id, r.id) AS job_id, coalesce(c.status, a.status, r.status) AS status,
           c.id IS NOT NULL AND c.id = i.id AS created,
           CASE WHEN i.error IS NOT NULL THEN i.error
                WHEN coalesce(c.id, a.id, r.id) IS NULL AND f.rank > (SELECT quota FROM room)
                    THEN %(quota_exceeded)s::jsonb
                WHEN coalesce(c.id, a.id, r.id) IS NULL THEN %(queue_full)s::jsonb END AS error
    FROM item i
    LEFT JOIN created c ON c.job_key = i.key
    LEFT JOIN active a ON a.job_key = i.key
    LEFT JOIN reused r ON r.id = i.reuse AND c.id IS NULL AND a.id IS NULL
    LEFT JOIN ranked f ON f.key = i.key
), items AS (
    INSERT INTO batch_items (batch_id, position, pr_url, job_id, error)
    SELECT (SELECT id FROM batch), position, url, job_id, error FROM resolved
)
SELECT * FROM resolved ORDER BY position;

-- name: claim
-- Hand the oldest queued jobs to the agent pool; SKIP LOCKED keeps concurrent claimers apart.
-- Not a status change (the job stays queued until an agent starts it): no event.
UPDATE jobs SET dispatched_at = now()
WHERE id IN (
    SELECT id FROM jobs
    WHERE status = 'queued' AND dispatched_at IS NULL AND NOT cancel_requested
      AND NOT (id = ANY(%(exclude)s))
    ORDER BY created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING *;

-- name: release
-- A dispatched job the pool did not start (replica busy, draining or gone) goes back to the queue.
UPDATE jobs SET dispatched_at = NULL
WHERE id = %(id)s AND status = 'queued'
RETURNING *;

-- name: release_stale
-- Dispatched jobs that the dispatcher no longer tracks (it restarted) go back to the queue.
UPDATE jobs SET dispatched_at = NULL
WHERE status = 'queued' AND dispatched_at IS NOT NULL AND NOT (id = ANY(%(tracked)s))
RETURNING *;

-- name: start
-- The agent takes the job: one execution attempt, a lease it must renew, the deadline clock. A job
-- whose worker died `max_attempts` times in a row without finishing a step fails here instead.
UPDATE jobs SET
    status = CASE WHEN fruitless_attempts >= %(max_attempts)s THEN 'failed' ELSE 'running' END,
    error = CASE WHEN fruitless_attempts >= %(max_attempts)s THEN jsonb_build_object(
                'code', 'max_attempts_exceeded',
                'message', format('The review was stopped after %%s attempts: its worker died %%s times in a '
                                  'row without finishing a step.', attempts, fruitless_attempts))
            ELSE error END,
    status_reason = NULL,
    finished_at = CASE WHEN fruitless_attempts >= %(max_attempts)s THEN now() ELSE NULL END,
    attempts = CASE WHEN fruitless_attempts >= %(max_attempts)s THEN attempts ELSE attempts + 1 END,
    steps_at_start = pr_review_steps_checkpointed(id),
    lease_owner = CASE WHEN fruitless_attempts >= %(max_attempts)s THEN NULL ELSE %(owner)s END,
    lease_expires_at = CASE WHEN fruitless_attempts >= %(max_attempts)s THEN NULL
                            ELSE now() + make_interval(secs => %(lease_s)s) END,
    dispatched_at = CASE WHEN fruitless_attempts >= %(max_attempts)s THEN NULL ELSE dispatched_at END,
    started_at = coalesce(started_at, now()),
    deadline_at = coalesce(deadline_at, now() + make_interval(secs => %(deadline_s)s)),
    progress = progress || '{"step": "starting"}',
    updated_at = now()
WHERE id = %(id)s AND status = 'queued' AND NOT cancel_requested
RETURNING *;

-- name: heartbeat
-- An agent replica renews the leases of all its jobs; says which were cancelled or ran out of
-- time. A job missing from the answer is no longer this replica's. Not a status change: no event.
UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
WHERE id = ANY(%(ids)s) AND lease_owner = %(owner)s AND status = 'running'
RETURNING id, cancel_requested, (deadline_at IS NOT NULL AND deadline_at < now()) AS past_deadline;

-- name: requeue
-- Graceful drain: the job stops at a step boundary and waits for another replica. The attempt it
-- used does not count, since nothing failed.
UPDATE jobs SET
    status = 'queued',
    status_reason = %(reason)s,
    attempts = greatest(attempts - 1, 0),
    lease_owner = NULL,
    lease_expires_at = NULL,
    dispatched_at = NULL,
    progress = progress || '{"step": "queued"}',
    updated_at = now()
WHERE id = %(id)s AND status = 'running' AND lease_owner = %(owner)s
RETURNING *;

-- name: finish
-- A running job ends (succeeded, failed or cancelled) by the worker that holds its lease.
UPDATE jobs SET
    status = %(status)s,
    status_reason = %(reason)s,
    review = %(review)s,
    error = %(error)s,
    lease_owner = NULL,
    lease_expires_at = NULL,
    dispatched_at = NULL,
    finished_at = now(),
    progress = progress || jsonb_build_object('step', CASE %(status)s WHEN 'succeeded' THEN 'done' ELSE %(status)s END),
    updated_at = now()
WHERE id = %(id)s AND status = 'running' AND lease_owner = %(owner)s
RETURNING *;

-- name: cancel
-- A queued job is cancelled at once; a running one is flagged and its agent, told by NOTIFY, stops
-- it. Only the first of concurrent cancels changes anything (and so writes an event).
UPDATE jobs SET
    cancel_requested = true,
    status_reason = %(reason)s,
    status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
    error = CASE WHEN status = 'queued'
                 THEN '{"code": "cancelled", "message": "The review was cancelled."}'::jsonb ELSE error END,
    finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
    progress = CASE WHEN status = 'queued' THEN progress || '{"step": "cancelled"}' ELSE progress END,
    updated_at = now()
WHERE id = %(id)s AND status IN ('queued', 'running') AND NOT cancel_requested
RETURNING *;

-- name: recover
-- The worker of a running job is gone: queue it again from its last checkpoint, unless it was
-- cancelled, or its worker has now died `max_attempts` times in a row without the job finishing a
-- step (a PR that crashes its replica). `only_expired` limits it to jobs whose lease ran out.
WITH lost AS (
    SELECT id, CASE WHEN pr_review_steps_checkpointed(id) > steps_at_start THEN 0
                    ELSE fruitless_attempts + 1 END AS fruitless
    FROM jobs
    WHERE status = 'running'
      AND (%(id)s::uuid IS NULL OR id = %(id)s)
      AND (NOT %(only_expired)s OR lease_expires_at < now())
    FOR UPDATE
)
UPDATE jobs SET
    status = CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN lost.fruitless >= %(max_attempts)s THEN 'failed'
                  ELSE 'queued' END,
    status_reason = %(reason)s,
    error = CASE WHEN cancel_requested THEN '{"code": "cancelled", "message": "The review was cancelled."}'::jsonb
                 WHEN lost.fruitless >= %(max_attempts)s THEN jsonb_build_object(
                     'code', 'max_attempts_exceeded',
                     'message', format('The review was stopped after %%s attempts: its worker died %%s times in '
                                       'a row without finishing a step.', attempts, lost.fruitless))
                 ELSE error END,
    finished_at = CASE WHEN cancel_requested OR lost.fruitless >= %(max_attempts)s THEN now() ELSE NULL END,
    progress = progress || jsonb_build_object('step', CASE WHEN cancel_requested THEN 'cancelled'
                                                           WHEN lost.fruitless >= %(max_attempts)s THEN 'failed'
                                                           ELSE 'queued' END),
    fruitless_attempts = lost.fruitless,
    lease_owner = NULL,
    lease_expires_at = NULL,
    dispatched_at = NULL,
    updated_at = now()
FROM lost
WHERE jobs.id = lost.id AND jobs.status = 'running'
RETURNING jobs.*;

-- name: purge_expired
-- Retention: finished jobs (their events and batch items cascade) and batches older than the
-- retention period, and PR snapshots no queued or running job needs.
WITH old_jobs AS (
    DELETE FROM jobs WHERE finished_at < now() - (%(days)s * interval '1 day') RETURNING id
), old_batches AS (
    DELETE FROM batches WHERE created_at < now() - (%(days)s * interval '1 day') RETURNING id
), old_deliveries AS (
    DELETE FROM webhook_deliveries WHERE received_at < now() - (%(days)s * interval '1 day') RETURNING 1
), old_snapshots AS (
    DELETE FROM pr_snapshots s
    WHERE s.created_at < now() - interval '1 hour'
      AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.status IN ('queued', 'running')
                      AND lower(j.repo) = lower(s.repo) AND j.number = s.number)
    RETURNING 1
)
SELECT (SELECT count(*) FROM old_jobs) AS jobs, (SELECT count(*) FROM old_batches) AS batches,
       (SELECT count(*) FROM old_snapshots) AS snapshots;

-- name: leftover_threads
-- LangGraph threads no running review needs: its job finished (the worker died before deleting
-- the thread) or is gone. Read from the threads, which are few, not from every job; a thread id
-- is a job id (CASE keeps the cast from seeing anything else).
SELECT t.thread_id FROM (
    SELECT thread_id,
           CASE WHEN thread_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN thread_id::uuid END AS job_id
    FROM (SELECT DISTINCT thread_id FROM checkpoints) threads
) t
LEFT JOIN jobs j ON j.id = t.job_id
WHERE t.job_id IS NOT NULL AND (j.id IS NULL OR j.finished_at IS NOT NULL)
LIMIT %(limit)s;

-- === Reads ========================================================================================

-- name: find_reusable_job
-- The review a new submit can reuse: the active one for the key, else the latest succeeded one
-- (the caller checks that one against the PR's current head).
SELECT * FROM jobs
WHERE job_key = %(key)s AND status IN ('queued', 'running', 'succeeded')
ORDER BY status = 'succeeded', created_at DESC
LIMIT 1;

-- name: latest_succeeded
-- The latest succeeded review of each key (a batch checks them against the PRs' current heads).
SELECT DISTINCT ON (job_key) * FROM jobs
WHERE job_key = ANY(%(keys)s) AND status = 'succeeded'
ORDER BY job_key, created_at DESC;

-- name: find_active_job
SELECT * FROM jobs WHERE job_key = %(key)s AND status IN ('queued', 'running');

-- name: active_jobs_of_pr
-- Queued or running reviews of one PR by one submitter (a new push supersedes them).
SELECT * FROM jobs
WHERE lower(repo) = lower(%(repo)s) AND number = %(number)s AND submitted_by = %(submitted_by)s
  AND status IN ('queued', 'running');

-- name: get_job
SELECT * FROM jobs WHERE id = %(id)s;

-- name: list_jobs
SELECT * FROM jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(submitted_by)s::text IS NULL OR submitted_by = %(submitted_by)s)
ORDER BY created_at DESC
LIMIT %(limit)s;

-- name: events_after
SELECT id, kind, data, created_at FROM events
WHERE job_id = %(job_id)s AND id > %(after_id)s
ORDER BY id
LIMIT %(limit)s;

-- name: queue_stats
-- Queued and running jobs by their partial indexes; finished ones of the last day by finished_at.
SELECT
    (SELECT count(*) FROM jobs WHERE status = 'queued') AS queued,
    (SELECT count(*) FROM jobs WHERE status = 'running') AS running,
    count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled
FROM jobs WHERE finished_at > now() - interval '1 day';

-- name: recent_failures
SELECT id, pr_url, error, finished_at FROM jobs
WHERE status = 'failed'
ORDER BY finished_at DESC
LIMIT %(limit)s;

-- name: get_batch
SELECT * FROM batches WHERE id = %(id)s;

-- name: batch_items
SELECT bi.position, bi.pr_url AS item_url, bi.job_id AS item_job_id, bi.error AS item_error, j.*
FROM batch_items bi LEFT JOIN jobs j ON j.id = bi.job_id
WHERE bi.batch_id = %(batch_id)s
ORDER BY bi.position;

-- === Progress of a running job ====================================================================

-- name: record_event
-- One progress event; the job's progress follows it: `progress` keys replace, and
-- `files_done_delta` adds to files_done (parallel groups finish in any order).
WITH ev AS (
    INSERT INTO events (job_id, kind, data) VALUES (%(job_id)s, %(kind)s, %(data)s)
    RETURNING id
)
UPDATE jobs SET
    progress = (progress || coalesce(%(progress)s::jsonb, '{}'::jsonb)) || jsonb_build_object(
        'files_done', coalesce((%(progress)s::jsonb->>'files_done')::int, (progress->>'files_done')::int)
                      + %(files_done_delta)s),
    updated_at = now()
WHERE id = %(job_id)s
RETURNING (SELECT id FROM ev) AS event_id, progress, usage;

-- name: set_head_sha
UPDATE jobs SET head_sha = %(head_sha)s, updated_at = now() WHERE id = %(id)s;

-- name: add_tokens
UPDATE jobs SET usage = jsonb_build_object(
        'llm_calls', (usage->>'llm_calls')::int,
        'prompt_tokens', (usage->>'prompt_tokens')::int + %(prompt_tokens)s,
        'completion_tokens', (usage->>'completion_tokens')::int + %(completion_tokens)s),
    updated_at = now()
WHERE id = %(id)s
RETURNING usage;

-- name: begin_llm_call
-- One LLM call of a running job begins, in one statement: the job must still be this worker's,
-- not cancelled and within its deadline (its row is locked, so a concurrent DELETE either sees
-- this call counted or this call sees the cancel: no call starts after DELETE has answered);
-- with the global cap, a free slot is taken; then the call is counted (before it is sent: a call
-- that dies half-way has still been paid for). `allowed` false: stop; `counted` false: no slot.
WITH job AS (
    SELECT id FROM jobs
    WHERE id = %(job_id)s AND status = 'running' AND lease_owner = %(owner)s AND NOT cancel_requested
      AND (deadline_at IS NULL OR deadline_at > now())
    FOR NO KEY UPDATE
), slot AS (
    UPDATE llm_slots SET holder = %(holder)s, job_id = %(job_id)s,
        expires_at = now() + make_interval(secs => %(hold_s)s)
    WHERE %(gated)s AND EXISTS (SELECT 1 FROM job) AND slot = (
        SELECT slot FROM llm_slots
        WHERE holder IS NULL OR expires_at < now()
        ORDER BY slot
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING slot
), counted AS (
    UPDATE jobs SET usage = jsonb_set(usage, '{llm_calls}', to_jsonb((usage->>'llm_calls')::int + 1)),
        updated_at = now()
    WHERE id = (SELECT id FROM job) AND (NOT %(gated)s OR EXISTS (SELECT 1 FROM slot))
    RETURNING usage
)
SELECT EXISTS (SELECT 1 FROM job) AS allowed, (SELECT slot FROM slot) AS slot,
       (SELECT usage FROM counted) AS usage;

-- name: release_llm_slot
-- A slot is free again; waiting callers on every replica are told at once.
WITH freed AS (
    UPDATE llm_slots SET holder = NULL, job_id = NULL, expires_at = NULL
    WHERE slot = %(slot)s AND holder = %(holder)s
    RETURNING slot
)
SELECT pg_notify('pr_review_llm_slots', slot::text) FROM freed;

-- name: resize_llm_slots
-- Make exactly `slots` rows exist (the configured global LLM concurrency).
WITH added AS (
    INSERT INTO llm_slots (slot) SELECT generate_series(1, %(slots)s) ON CONFLICT DO NOTHING RETURNING slot
)
DELETE FROM llm_slots WHERE slot > %(slots)s;

-- name: llm_slots_in_use
SELECT count(*) AS in_use FROM llm_slots WHERE holder IS NOT NULL AND expires_at >= now();

-- name: save_pr_snapshot
INSERT INTO pr_snapshots (repo, number, head_sha, data) VALUES (%(repo)s, %(number)s, %(head_sha)s, %(data)s)
ON CONFLICT (repo, number, head_sha) DO NOTHING;

-- name: load_pr_snapshot
SELECT data FROM pr_snapshots WHERE repo = %(repo)s AND number = %(number)s AND head_sha = %(head_sha)s;

-- === Service secrets ==============================================================================

-- name: service_secret
-- The named secret, made on first use (`value` is a fresh random one, kept only if none exists).
WITH made AS (
    INSERT INTO service_secrets (name, value) VALUES (%(name)s, %(value)s)
    ON CONFLICT (name) DO NOTHING
    RETURNING value
)
SELECT value FROM made
UNION ALL
SELECT value FROM service_secrets WHERE name = %(name)s;

-- === Access: API keys and GitHub's deliveries ====================================================

-- name: create_api_key
INSERT INTO api_keys (id, name, secret_sha256, rights, max_active, max_per_hour)
VALUES (%(id)s, %(name)s, %(secret_sha256)s, %(rights)s, %(max_active)s, %(max_per_hour)s)
ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING
RETURNING *;

-- name: get_api_key
SELECT * FROM api_keys WHERE id = %(id)s AND revoked_at IS NULL;

-- name: list_api_keys
SELECT id, name, rights, max_active, max_per_hour, created_at, revoked_at FROM api_keys
WHERE %(all)s OR revoked_at IS NULL
ORDER BY created_at;

-- name: revoke_api_key
-- By name or id; the trigger tells every ingress replica to forget the key at once.
UPDATE api_keys SET revoked_at = now()
WHERE (name = %(name)s OR id = %(name)s) AND revoked_at IS NULL
RETURNING id, name;

-- name: record_delivery
-- A webhook delivery, once: nothing is returned for a redelivery.
INSERT INTO webhook_deliveries (id, event) VALUES (%(id)s, %(event)s)
ON CONFLICT (id) DO NOTHING
RETURNING id;
