"""One typed configuration object, read from the environment once at start."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AppKeyMissing(RuntimeError):
    """GITHUB_APP_ID is set but the App's private key cannot be read: pr-review refuses to start."""


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Everything pr-review reads from its environment (README, "Configuration").

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
    llm_global_concurrency: int = Field(default=16, gt=0, description="LLM calls at once, all replicas, to an "
                                        "external LLM_BASE_URL (the in-cluster app is bounded by Serve)")
    job_max_llm_calls: int = Field(default=200, gt=0, description="LLM calls per review")
    job_max_tokens: int = Field(default=400_000, gt=0, description="prompt+completion tokens per review")
    job_deadline_s: float = Field(default=1800.0, gt=0, description="wall-clock limit of one review, seconds")

    # --- Queue and workers ---------------------------------------------------------------------
    max_queued_jobs: int = Field(default=1000, gt=0, description="queued reviews before 503")
    max_attempts: int = Field(default=3, gt=0, description="worker deaths in a row with no step done: then it fails")
    lease_s: float = Field(default=15.0, gt=1, description="a running job's lease, renewed every lease_s/3")
    sweep_interval_s: float = Field(default=2.0, gt=0, description="reconciler period, seconds")
    retention_days: float = Field(default=30.0, gt=0, description="finished jobs, events and batches are "
                                  "deleted after this many days")
    cpu_step_timeout_s: float = Field(
        default=60.0, gt=0, description="longest a CPU-bound review step (diffs, tokens, analyzers) may run "
                                        "in its worker process before it is killed, seconds")
    cpu_workers: int = Field(default=2, gt=0, description="worker processes for CPU-bound steps per replica")

    # --- GitHub --------------------------------------------------------------------------------
    github_timeout_s: float = Field(default=30.0, gt=0)
    github_rate_limit_max_wait_s: float = Field(
        default=60.0, ge=0, description="longest wait for a GitHub rate-limit reset before failing"
    )
    github_app_id: int | None = Field(default=None, gt=0, validation_alias=_env("GITHUB_APP_ID"),
                                      description="a GitHub App: each job uses a token of its PR's installation")
    github_app_private_key: SecretStr | None = Field(
        default=None, validation_alias=_env("GITHUB_APP_PRIVATE_KEY"), description="the App's private key, PEM text")
    github_app_private_key_file: Path | None = Field(
        default=None, validation_alias=_env("GITHUB_APP_PRIVATE_KEY_FILE"),
        description="a file holding the App's PEM key; read only when GITHUB_APP_ID is set")
    github_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("GITHUB_WEBHOOK_SECRET"),
        description="the secret GitHub signs webhook deliveries with; unset: the webhook route answers 404")
    max_request_bytes: int = Field(default=64 * 1024, gt=0, description="largest accepted request body")
    max_webhook_bytes: int = Field(default=25 * 1024 * 1024, gt=0,
                                   description="largest accepted GitHub delivery (GitHub's own limit)")

    # --- Access --------------------------------------------------------------------------------
    api_keys: SecretStr | None = Field(default=None, validation_alias=_env("PR_REVIEW_API_KEYS"),
                                       description="operator keys, comma-separated name:secret pairs")
    allowed_hosts: str = Field(default="localhost,127.0.0.1,[::1]", description="Host headers the web page "
                               "answers (comma-separated; `*` for any): refuses DNS-rebinding pages")
    api_key: SecretStr | None = Field(default=None, validation_alias=_env("PR_REVIEW_API_KEY"), description="the key "
                                      "the CLI's client commands send; unset: the local key file, if any")

    @field_validator("github_api_url", "llm_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("github_app_id", "github_app_private_key", "github_app_private_key_file",
                     "github_webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (a Secret without that key) is unset: never an empty webhook secret."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _app_has_a_key(self) -> Settings:
        if self.github_app_id is not None and not (self.github_app_private_key or self.github_app_private_key_file):
            raise ValueError("GITHUB_APP_ID is set but the App's private key is not: set GITHUB_APP_PRIVATE_KEY "
                             "(PEM text) or GITHUB_APP_PRIVATE_KEY_FILE (a path)")
        return self

    def github_app_key(self) -> SecretStr | None:
        """The GitHub App's private key (PEM) when GITHUB_APP_ID is set, else None without touching
        GITHUB_APP_PRIVATE_KEY_FILE (Kubernetes always names the file; it exists only when the
        Secret holds the key). GITHUB_APP_PRIVATE_KEY wins over the file. Raises `AppKeyMissing`
        when the App id is set and no key can be read: a startup error, never a job's."""
        if self.github_app_id is None:
            return None
        if self.github_app_private_key is not None:
            return self.github_app_private_key
        path = self.github_app_private_key_file
        if path is None:  # the validator above makes this unreachable
            raise AppKeyMissing("GITHUB_APP_ID is set but neither GITHUB_APP_PRIVATE_KEY nor "
                                "GITHUB_APP_PRIVATE_KEY_FILE is")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AppKeyMissing(
                f"GITHUB_APP_ID is set but the App's private key file {path} cannot be read "
                f"({type(exc).__name__}): put the key (private-key.pem) in the Secret that mounts it, or set "
                f"GITHUB_APP_PRIVATE_KEY, or unset GITHUB_APP_ID to use GITHUB_TOKEN") from exc
        if not text.strip():
            raise AppKeyMissing(f"GITHUB_APP_ID is set but the App's private key file {path} is empty")
        return SecretStr(text)

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
