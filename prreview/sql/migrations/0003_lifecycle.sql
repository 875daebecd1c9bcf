-- One job lifecycle: every status change writes its event (a trigger, so no statement can forget
-- it), every event is pushed to listeners (NOTIFY), and data has an end (retention indexes).

-- Why the job last changed status, for its event ("worker lease expired", "cancelled by the user").
ALTER TABLE jobs ADD COLUMN status_reason text;

-- A status change, the creation of a job, or a cancel request writes exactly one event, built
-- from the row itself, so the same event always carries the same payload whoever caused it.
CREATE FUNCTION pr_review_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    data jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        kind := 'queued';
        data := jsonb_build_object('pr_url', NEW.pr_url);
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        kind := CASE NEW.status WHEN 'running' THEN 'started' WHEN 'queued' THEN 'requeued' ELSE NEW.status END;
        data := CASE NEW.status
            WHEN 'running' THEN jsonb_build_object('attempt', NEW.attempts)
            WHEN 'queued' THEN jsonb_build_object('reason', NEW.status_reason)
            WHEN 'succeeded' THEN jsonb_build_object(
                'verdict', NEW.review->>'verdict',
                'findings', jsonb_array_length(coalesce(NEW.review->'findings', '[]'::jsonb)))
            ELSE jsonb_build_object('error', NEW.error, 'reason', NEW.status_reason)
        END;
    ELSIF NEW.cancel_requested AND NOT OLD.cancel_requested THEN
        kind := 'cancel_requested';
        data := jsonb_build_object('reason', NEW.status_reason);
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO events (job_id, kind, data) VALUES (NEW.id, kind, jsonb_strip_nulls(data));
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_lifecycle_event AFTER INSERT OR UPDATE OF status, cancel_requested ON jobs
    FOR EACH ROW EXECUTE FUNCTION pr_review_job_event();

-- Every event is pushed, delivered at commit (never before it can be read):
--   pr_review_events  payload: job id   -> the ingress replicas' SSE streams
--   pr_review_jobs    payload: job id   -> the dispatcher: a job (re)entered the queue
--   pr_review_cancel  payload: job id   -> the agent replicas: stop this job's run now
CREATE FUNCTION pr_review_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pr_review_events', NEW.job_id::text);
    IF NEW.kind IN ('queued', 'requeued') THEN
        PERFORM pg_notify('pr_review_jobs', NEW.job_id::text);
    ELSIF NEW.kind = 'cancel_requested' THEN
        PERFORM pg_notify('pr_review_cancel', NEW.job_id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION pr_review_event_notify();

-- GitHub treats owner and repository names case-insensitively: so does the idempotency key.
DROP INDEX jobs_one_active_per_key;
CREATE UNIQUE INDEX jobs_one_active_per_key ON jobs (lower(repo), number, options_hash)
    WHERE status IN ('queued', 'running');
DROP INDEX jobs_by_key;
CREATE INDEX jobs_by_key ON jobs (lower(repo), number, options_hash, created_at DESC);

-- Retention and the summaries read recent finished jobs by index, never every job.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_recent_failures ON jobs (finished_at DESC) WHERE status = 'failed';
CREATE INDEX batches_created ON batches (created_at);
ALTER TABLE batch_items DROP CONSTRAINT batch_items_job_id_fkey,
    ADD CONSTRAINT batch_items_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE;

-- A PR as fetched, once per head commit: checkpoints refer to it instead of carrying it.
CREATE TABLE pr_snapshots (
    repo        text        NOT NULL,
    number      integer     NOT NULL,
    head_sha    text        NOT NULL,
    data        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo, number, head_sha)
);
CREATE INDEX pr_snapshots_created ON pr_snapshots (created_at);

-- Secrets the service makes for itself (the key that signs its GitHub markers), shared by replicas.
CREATE TABLE service_secrets (
    name        text        PRIMARY KEY,
    value       bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
