-- A submitter's quotas, judged in one place: one submit and a batch ask the same question.

-- How many more reviews the submitter may queue now: the smaller room its two limits leave (may
-- be 0 or less), or NULL when it has no limit. Nothing is counted for a submitter without limits.
CREATE FUNCTION pr_review_quota_left(submitter text, max_active integer, max_per_hour integer)
RETURNS integer LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF max_active IS NULL AND max_per_hour IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN least(
        max_active - (SELECT count(*) FROM jobs WHERE submitted_by = submitter AND status IN ('queued', 'running')),
        max_per_hour - (SELECT count(*) FROM jobs WHERE submitted_by = submitter
                                                  AND created_at > now() - interval '1 hour'));
END $$;
