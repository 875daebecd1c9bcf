"""One typed configuration object, read from the environment once at start."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Everything pr-review reads from its environment (see API.md, "Configuration").

    The contract's variables keep their plain names; pr-review's own knobs are prefixed
    `PR_REVIEW_`. Secrets are `SecretStr` so they never print in a repr or a log line.
    """

    model_config = SettingsConfigDict(env_prefix="PR_REVIEW_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(default=None, validation_alias=_env("DATABASE_URL"))
    home: Path = Field(
        default=Path("~/.local/share/pr-review").expanduser(), validation_alias=_env("PR_REVIEW_HOME")
    )
    github_api_url: str = Field(default="https://api.github.com", validation_alias=_env("GITHUB_API_URL"))
    github_token: SecretStr | None = Field(default=None, validation_alias=_env("GITHUB_TOKEN"))
    llm_base_url: str | None = Field(default=None, validation_alias=_env("LLM_BASE_URL"))
    llm_model: str | None = Field(default=None, validation_alias=_env("LLM_MODEL"))
    llm_api_key: SecretStr | None = Field(default=None, validation_alias=_env("LLM_API_KEY"))
    http_port: int = Field(default=8000, ge=1, le=65535, validation_alias=_env("PR_REVIEW_HTTP_PORT"))
    api_url_override: str | None = Field(default=None, validation_alias=_env("PR_REVIEW_API_URL"))
    dashboard_port: int = Field(default=8265, ge=1, le=65535, description="Ray dashboard port (local runs)")
    metrics_export_port: int | None = Field(
        default=None, ge=1, le=65535, description="Ray's Prometheus endpoint (local runs); unset: Ray picks one")

    # --- LLM calls: bounded, counted, cancellable -------------------------------------------
    llm_timeout_s: float = Field(default=120.0, gt=0, description="per LLM call, seconds")
    llm_max_retries: int = Field(default=2, ge=0, description="retries of a failed LLM call")
    llm_max_tokens: int = Field(default=1024, gt=0, description="completion tokens per call")
    llm_context_tokens: int = Field(default=8192, gt=512, description="model context window, tokens")
    llm_global_concurrency: int = Field(default=16, gt=0, description="LLM calls at once, all replicas")
    job_max_llm_calls: int = Field(default=200, gt=0, description="LLM calls per review")
    job_max_tokens: int = Field(default=400_000, gt=0, description="prompt+completion tokens per review")
    job_deadline_s: float = Field(default=1800.0, gt=0, description="wall-clock limit of one review, seconds")

    # --- Queue and workers ---------------------------------------------------------------------
    max_queued_jobs: int = Field(default=1000, gt=0, description="queued reviews before 503")
    max_attempts: int = Field(default=3, gt=0, description="executions of one job before it fails")
    lease_s: float = Field(default=15.0, gt=1, description="a running job's lease, renewed every lease_s/3")
    sweep_interval_s: float = Field(default=2.0, gt=0, description="reconciler period, seconds")
    dispatch_poll_s: float = Field(default=0.5, gt=0, description="dispatcher poll period, seconds")
    agent_max_ongoing: int = Field(default=4, gt=0, description="reviews at once per agent replica")
    agent_max_replicas: int = Field(default=4, gt=0, description="upper bound of the agent pool")

    # --- GitHub --------------------------------------------------------------------------------
    github_timeout_s: float = Field(default=30.0, gt=0)
    github_rate_limit_max_wait_s: float = Field(
        default=60.0, ge=0, description="longest wait for a GitHub rate-limit reset before failing"
    )
    max_request_bytes: int = Field(default=64 * 1024, gt=0, description="largest accepted request body")

    @field_validator("github_api_url", "llm_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def api_url(self) -> str:
        return (self.api_url_override or f"http://127.0.0.1:{self.http_port}").rstrip("/")

    @property
    def github_web_host(self) -> str:
        """The host a PR URL must name: `api.github.com` -> `github.com`, GHE -> its own host."""
        parts = urlsplit(self.github_api_url)
        host = parts.hostname or ""
        if host == "api.github.com":
            return "github.com"
        return f"{host}:{parts.port}" if parts.port else host

    @property
    def llm_url(self) -> str:
        """The OpenAI-compatible base URL the agents call (in-cluster vLLM app when unset)."""
        return self.llm_base_url or f"http://127.0.0.1:{self.http_port}/llm/v1"

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; overrides win (used by tests and the CLI)."""
    return Settings(**overrides)  # type: ignore[arg-type]
