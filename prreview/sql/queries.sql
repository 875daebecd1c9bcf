-- Every SQL statement pr-review runs, by name. Loaded once by prreview/sql/__init__.py.

-- name: insert_job
-- A new review and its first event, unless one is already active for the same key or the
-- queue is full (then nothing is returned and the caller tells the two apart).
WITH job AS (
    INSERT INTO jobs (id, pr_url, repo, number, options, options_hash)
    SELECT %(id)s, %(pr_url)s, %(repo)s, %(number)s, %(options)s, %(options_hash)s
    WHERE (SELECT count(*) FROM jobs WHERE status = 'queued') < %(max_queued)s
    ON CONFLICT (repo, number, options_hash) WHERE status IN ('queued', 'running') DO NOTHING
    RETURNING *
), queued AS (
    INSERT INTO events (job_id, kind, data)
    SELECT id, 'queued', jsonb_build_object('pr_url', pr_url) FROM job
)
SELECT * FROM job;

-- name: find_reusable_job
-- The review a new submit can reuse: the active one for the key, else the latest succeeded one
-- (the caller checks that one against the PR's current head).
SELECT * FROM jobs
WHERE repo = %(repo)s AND number = %(number)s AND options_hash = %(options_hash)s
  AND status IN ('queued', 'running', 'succeeded')
ORDER BY status = 'succeeded', created_at DESC
LIMIT 1;

-- name: find_active_job
SELECT * FROM jobs
WHERE repo = %(repo)s AND number = %(number)s AND options_hash = %(options_hash)s
  AND status IN ('queued', 'running');

-- name: get_job
SELECT * FROM jobs WHERE id = %(id)s;

-- name: list_jobs
SELECT * FROM jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY created_at DESC
LIMIT %(limit)s;

-- name: claim_for_dispatch
-- Hand the oldest queued jobs to the agent pool; SKIP LOCKED keeps concurrent claimers apart.
UPDATE jobs SET dispatched_at = now()
WHERE id IN (
    SELECT id FROM jobs
    WHERE status = 'queued' AND dispatched_at IS NULL AND NOT cancel_requested
      AND NOT (id = ANY(%(in_flight)s))
    ORDER BY created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- name: release_dispatch
-- A dispatched job the pool never started (replica gone, call lost) goes back to the queue.
UPDATE jobs SET dispatched_at = NULL
WHERE id = %(id)s AND status = 'queued';

-- name: release_stale_dispatches
-- Dispatched jobs that the dispatcher no longer tracks (it restarted) go back to the queue.
UPDATE jobs SET dispatched_at = NULL
WHERE status = 'queued' AND dispatched_at IS NOT NULL AND NOT (id = ANY(%(in_flight)s))
RETURNING id;

-- name: start_job
-- The agent takes the job: one execution attempt, a lease it must renew, the deadline clock.
UPDATE jobs SET
    status = 'running',
    attempts = attempts + 1,
    lease_owner = %(owner)s,
    lease_expires_at = now() + make_interval(secs => %(lease_s)s),
    started_at = coalesce(started_at, now()),
    deadline_at = coalesce(deadline_at, now() + make_interval(secs => %(deadline_s)s)),
    updated_at = now()
WHERE id = %(id)s AND status = 'queued' AND NOT cancel_requested
RETURNING *;

-- name: renew_leases
-- Heartbeat of an agent replica for all its jobs; says which were cancelled or ran out of time.
-- A job missing from the answer is no longer this replica's.
UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
WHERE id = ANY(%(ids)s) AND lease_owner = %(owner)s AND status = 'running'
RETURNING id, cancel_requested, (deadline_at IS NOT NULL AND deadline_at < now()) AS past_deadline;

-- name: finish_job
UPDATE jobs SET
    status = %(status)s,
    review = %(review)s,
    error = %(error)s,
    lease_owner = NULL,
    lease_expires_at = NULL,
    dispatched_at = NULL,
    finished_at = now(),
    updated_at = now()
WHERE id = %(id)s AND status = 'running' AND lease_owner = %(owner)s
RETURNING *;

-- name: return_to_queue
-- Graceful drain: the job stops at a step boundary and waits for another replica. The attempt
-- it used does not count, since nothing failed.
UPDATE jobs SET
    status = 'queued',
    attempts = greatest(attempts - 1, 0),
    lease_owner = NULL,
    lease_expires_at = NULL,
    dispatched_at = NULL,
    updated_at = now()
WHERE id = %(id)s AND status = 'running' AND lease_owner = %(owner)s
RETURNING *;

-- name: recover_job
-- The worker of a running job vanished: queue it again from its last checkpoint, unless it was
-- cancelled or has used up its attempts. `only_expired` limits it to jobs whose lease ran out.
UPDATE jobs SET
    status = CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN attempts >= %(max_attempts)s THEN 'failed'
                  ELSE 'queued' END,
    error = CASE WHEN cancel_requested THEN '{"code": "cancelled", "message": "The review was cancelled."}'::jsonb
                 WHEN attempts >= %(max_attempts)s THEN jsonb_build_object(
                     'code', 'max_attempts_exceeded',
                     'message', format('The review was stopped after %%s attempts: its worker died each time.', attempts))
                 ELSE error END,
    finished_at = CASE WHEN cancel_requested OR attempts >= %(max_attempts)s THEN now() ELSE NULL END,
    lease_owner = NULL,
    lease_expires_at = NULL,
    dispatched_at = NULL,
    updated_at = now()
WHERE status = 'running'
  AND (%(id)s::uuid IS NULL OR id = %(id)s)
  AND (NOT %(only_expired)s OR lease_expires_at < now())
RETURNING id, status, attempts;

-- name: request_cancel
-- A queued job is cancelled at once; a running one is flagged and its agent stops it.
UPDATE jobs SET
    cancel_requested = true,
    status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
    error = CASE WHEN status = 'queued'
                 THEN '{"code": "cancelled", "message": "The review was cancelled."}'::jsonb ELSE error END,
    finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
    updated_at = now()
WHERE id = %(id)s
RETURNING *;

-- name: add_usage
UPDATE jobs SET usage = jsonb_build_object(
        'llm_calls', (usage->>'llm_calls')::int + %(llm_calls)s,
        'prompt_tokens', (usage->>'prompt_tokens')::int + %(prompt_tokens)s,
        'completion_tokens', (usage->>'completion_tokens')::int + %(completion_tokens)s),
    updated_at = now()
WHERE id = %(id)s
RETURNING usage;

-- name: set_head_sha
UPDATE jobs SET head_sha = %(head_sha)s, updated_at = now() WHERE id = %(id)s;

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

-- name: events_after
SELECT id, kind, data, created_at FROM events
WHERE job_id = %(job_id)s AND id > %(after_id)s
ORDER BY id
LIMIT %(limit)s;

-- name: insert_batch
INSERT INTO batches (id, options) VALUES (%(id)s, %(options)s) RETURNING *;

-- name: insert_batch_item
INSERT INTO batch_items (batch_id, position, pr_url, job_id, error)
VALUES (%(batch_id)s, %(position)s, %(pr_url)s, %(job_id)s, %(error)s);

-- name: get_batch
SELECT * FROM batches WHERE id = %(id)s;

-- name: batch_items
SELECT bi.position, bi.pr_url, bi.job_id, bi.error AS item_error, j.*
FROM batch_items bi LEFT JOIN jobs j ON j.id = bi.job_id
WHERE bi.batch_id = %(batch_id)s
ORDER BY bi.position;

-- name: queue_stats
SELECT
    count(*) FILTER (WHERE status = 'queued') AS queued,
    count(*) FILTER (WHERE status = 'running') AS running,
    count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled
FROM jobs;

-- name: recent_failures
SELECT id, pr_url, error, finished_at FROM jobs
WHERE status = 'failed'
ORDER BY finished_at DESC NULLS LAST
LIMIT %(limit)s;

-- name: resize_llm_slots
-- Make exactly `slots` rows exist (the configured global LLM concurrency).
WITH added AS (
    INSERT INTO llm_slots (slot) SELECT generate_series(1, %(slots)s) ON CONFLICT DO NOTHING RETURNING slot
)
DELETE FROM llm_slots WHERE slot > %(slots)s;

-- name: acquire_llm_slot
UPDATE llm_slots SET holder = %(holder)s, job_id = %(job_id)s,
    expires_at = now() + make_interval(secs => %(hold_s)s)
WHERE slot = (
    SELECT slot FROM llm_slots
    WHERE holder IS NULL OR expires_at < now()
    ORDER BY slot
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING slot;

-- name: release_llm_slot
UPDATE llm_slots SET holder = NULL, job_id = NULL, expires_at = NULL
WHERE slot = %(slot)s AND holder = %(holder)s;

-- name: llm_slots_in_use
SELECT count(*) AS in_use FROM llm_slots WHERE holder IS NOT NULL AND expires_at >= now();
