-- Jobs, batches and progress events. Append-only: change the schema with a new numbered file.

CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    pr_url            text        NOT NULL,
    repo              text        NOT NULL,
    number            integer     NOT NULL,
    head_sha          text,
    options           jsonb       NOT NULL DEFAULT '{}',
    options_hash      text        NOT NULL,
    status            text        NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts          integer     NOT NULL DEFAULT 0,
    -- Set when the dispatcher hands the job to the agent pool; cleared when it goes back to the queue.
    dispatched_at     timestamptz,
    lease_owner       text,
    lease_expires_at  timestamptz,
    cancel_requested  boolean     NOT NULL DEFAULT false,
    deadline_at       timestamptz,
    progress          jsonb       NOT NULL DEFAULT '{"step": "queued", "files_total": 0, "files_done": 0}',
    usage             jsonb       NOT NULL DEFAULT '{"llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0}',
    review            jsonb,
    error             jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz
);

-- At most one active (queued or running) review per PR and options: the idempotency guard.
CREATE UNIQUE INDEX jobs_one_active_per_key ON jobs (repo, number, options_hash)
    WHERE status IN ('queued', 'running');
CREATE INDEX jobs_by_key ON jobs (repo, number, options_hash, created_at DESC);
CREATE INDEX jobs_queued ON jobs (created_at) WHERE status = 'queued';
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_newest ON jobs (created_at DESC);

CREATE TABLE batches (
    id          uuid PRIMARY KEY,
    options     jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE batch_items (
    batch_id  uuid    NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    position  integer NOT NULL,
    pr_url    text    NOT NULL,
    job_id    uuid    REFERENCES jobs (id),
    error     jsonb,
    PRIMARY KEY (batch_id, position)
);

CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    job_id      uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind        text        NOT NULL,
    data        jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_by_job ON events (job_id, id);
