-- A job fails with `max_attempts_exceeded` only after its worker died that many times in a row
-- without the job finishing a graph step: a PR that crashes its replica stops there, while reviews
-- that lose their replica to a node failure or a rollout, but get further each time, go on.

-- Executions in a row that ended with the worker's death and no new step checkpointed.
ALTER TABLE jobs ADD COLUMN fruitless_attempts integer NOT NULL DEFAULT 0;
-- Graph steps checkpointed when the current execution started (compared when its worker dies).
ALTER TABLE jobs ADD COLUMN steps_at_start integer NOT NULL DEFAULT 0;

-- Work of a job's LangGraph thread saved so far: graph steps checkpointed, and tasks whose writes
-- were saved (one of a review's parallel groups done counts before the whole step is). LangGraph's
-- own bookkeeping is none: the input (step -1) and its `__start__` task (step 0), error writes.
-- plpgsql: LangGraph's tables are created after pr-review's migrations.
CREATE FUNCTION pr_review_steps_checkpointed(job uuid) RETURNS integer LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT count(*) FROM checkpoints c
            WHERE c.thread_id = job::text AND c.checkpoint_ns = '' AND (c.metadata->>'step')::int >= 1)
         + (SELECT count(DISTINCT (w.checkpoint_id, w.task_id))
            FROM checkpoint_writes w
            JOIN checkpoints c USING (thread_id, checkpoint_ns, checkpoint_id)
            WHERE w.thread_id = job::text AND w.checkpoint_ns = '' AND (c.metadata->>'step')::int >= 0
              AND w.channel NOT LIKE '\_\_%');
END $$;

-- A job that stops running holds no LLM slot: the slots of a worker that died are free again as
-- soon as its job is recovered (not when their claims expire, minutes later), and so is a slot
-- taken by a call whose job was stopped while the call was being begun.
CREATE FUNCTION pr_review_free_slots() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    freed integer;
BEGIN
    FOR freed IN UPDATE llm_slots SET holder = NULL, job_id = NULL, expires_at = NULL
                 WHERE job_id = NEW.id RETURNING slot LOOP
        PERFORM pg_notify('pr_review_llm_slots', freed::text);
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_free_slots AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')
    EXECUTE FUNCTION pr_review_free_slots();
