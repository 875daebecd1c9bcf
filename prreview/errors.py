"""Typed errors. Each has a stable `code`: the API's `error.code` and a job's `error.code`."""

from __future__ import annotations


class PRReviewError(Exception):
    """Base of every pr-review error."""

    code = "internal_error"
    http_status = 500
    retryable = False

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


# --- Request errors (the ingress answers them) ------------------------------------------------
class BadRequest(PRReviewError):
    code = "bad_request"
    http_status = 400


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidPRURL(BadRequest):
    code = "invalid_pr_url"


class ForeignHost(BadRequest):
    code = "foreign_host"


class PayloadTooLarge(PRReviewError):
    code = "payload_too_large"
    http_status = 413


class NotFound(PRReviewError):
    code = "not_found"
    http_status = 404


class QueueFull(PRReviewError):
    code = "queue_full"
    http_status = 503


class Unavailable(PRReviewError):
    code = "unavailable"
    http_status = 503


# --- Job errors (a failed review carries them) ------------------------------------------------
class GitHubError(PRReviewError):
    code = "github_error"
    http_status = 502


class GitHubTransient(GitHubError):
    code = "github_unavailable"
    retryable = True


class PRNotFound(GitHubError):
    code = "pr_not_found"
    http_status = 404


class GitHubRateLimited(GitHubError):
    code = "github_rate_limited"
    http_status = 429


class LLMError(PRReviewError):
    code = "llm_error"
    http_status = 502


class LLMTimeout(LLMError):
    code = "llm_timeout"
    http_status = 504


class LLMBadOutput(LLMError):
    code = "llm_bad_output"


class BudgetExceeded(PRReviewError):
    code = "budget_exceeded"
    http_status = 429


class DeadlineExceeded(PRReviewError):
    code = "deadline_exceeded"
    http_status = 504


class MaxAttemptsExceeded(PRReviewError):
    code = "max_attempts_exceeded"


class JobCancelled(PRReviewError):
    code = "cancelled"
    http_status = 409
