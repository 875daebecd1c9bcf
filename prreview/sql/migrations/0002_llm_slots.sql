-- The global cap on concurrent LLM calls: one row per slot, shared by every agent replica.
-- A holder that dies leaves an expiring claim, so a crash never leaks a slot for long.
CREATE TABLE llm_slots (
    slot        integer PRIMARY KEY,
    holder      text,
    job_id      uuid,
    expires_at  timestamptz
);
