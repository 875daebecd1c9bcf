-- Who may do what: API keys (stored hashed), who submitted each job, GitHub's deliveries.

CREATE TABLE api_keys (
    id            text        PRIMARY KEY,           -- the key's public part (`prk_<id>_<secret>`)
    name          text        NOT NULL,
    secret_sha256 bytea       NOT NULL,              -- SHA-256 of the secret part; the key itself is never stored
    rights        text[]      NOT NULL,
    max_active    integer,                           -- queued or running reviews at once; NULL: no limit
    max_per_hour  integer,                           -- reviews submitted per hour; NULL: no limit
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;

-- A revoked key stops working at once on every ingress replica (they cache keys briefly).
CREATE FUNCTION pr_review_key_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pr_review_keys', NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER api_keys_revoked AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION pr_review_key_revoked();

-- Who submitted a job: an API key's name (`key:<name>`), or `github` for a webhook delivery.
-- A key reads and cancels its own reviews; the idempotency key is per submitter, so one key never
-- learns of another's review by submitting the same PR.
ALTER TABLE jobs ADD COLUMN submitted_by text NOT NULL DEFAULT 'local';
-- The GitHub App installation the PR belongs to (never a token: those live in memory only).
ALTER TABLE jobs ADD COLUMN installation_id bigint;
-- The idempotency key, computed by the service (prreview/store.py `job_key`): submitter, PR,
-- options, and for webhook reviews the head commit too (each push is its own review).
ALTER TABLE jobs ADD COLUMN job_key text;
UPDATE jobs SET job_key = 'local:' || lower(repo) || '#' || number || ':' || options_hash;
ALTER TABLE jobs ALTER COLUMN job_key SET NOT NULL;

DROP INDEX jobs_one_active_per_key;
CREATE UNIQUE INDEX jobs_one_active_per_key ON jobs (job_key) WHERE status IN ('queued', 'running');
DROP INDEX jobs_by_key;
CREATE INDEX jobs_by_key ON jobs (job_key, created_at DESC);
CREATE INDEX jobs_by_submitter ON jobs (submitted_by, created_at DESC);
CREATE INDEX jobs_active_by_submitter ON jobs (submitted_by) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_active_by_pr ON jobs (lower(repo), number) WHERE status IN ('queued', 'running');

ALTER TABLE batches ADD COLUMN submitted_by text NOT NULL DEFAULT 'local';

-- GitHub's deliveries already handled: a redelivery starts nothing new.
CREATE TABLE webhook_deliveries (
    id           text        PRIMARY KEY,
    event        text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);
