"""Typed configuration: service settings (``coe.yaml``) and experts (``experts.yaml``).

Both are YAML validated by pydantic with unknown keys rejected; errors name file, line and field.
Environment variables override file values: ``REDIS_URL``, ``COE_API_KEYS`` (comma separated),
and ``COE_<FIELD>`` for the other settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from coe import yamlio
from coe.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "config" / "coe.yaml"
#: Local experts without a price cost this many USD per billion parameters per million tokens.
LOCAL_PRICE_PER_B = 0.02


class Price(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)


class ExpertConfig(BaseModel):
    """One expert: where its model lives, how to reach it, what it costs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    backend: Literal["llamacpp", "vllm", "openai", "litellm"]
    model: str = Field(description="a GGUF path, a hub id, a litellm model, or package:NAME")
    endpoint: str | None = Field(None, description="base URL of a running server; null = coe launches one")
    api: Literal["chat", "completions"] = "chat"
    prompt_template: str = Field(
        "{prompt}", description="completions API only: text around the rendered conversation ({prompt})"
    )
    system_prompt: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0)
    stop: tuple[str, ...] = ()
    params_b: float = Field(gt=0, description="parameters in billions")
    price_per_mtok: Price | None = None
    context_size: int = Field(4096, gt=0)
    max_concurrency: int = Field(2, gt=0)
    max_queue: int | None = Field(
        None, gt=0, description="calls that may wait for a slot (default 4 × max_concurrency); more get 429"
    )
    timeout_s: float = Field(120.0, gt=0)
    retries: int = Field(1, ge=0)
    start_timeout_s: float | None = Field(
        None,
        gt=0,
        description="seconds a launched server may take to start; default 120 (llama.cpp), 600 (vLLM)",
    )
    threads: int | None = Field(
        None,
        gt=0,
        description="llama.cpp servers coe launches: CPU threads; default: the cores shared among "
        "the llama.cpp servers of the pool (at most 4 each)",
    )
    server_args: tuple[str, ...] = Field(
        (), description="extra arguments for a launched vLLM server, e.g. [--dtype, float32, --enforce-eager]"
    )
    memory_bytes: int | None = Field(
        None, gt=0, description="memory its server holds (batch budget); null: GGUF size, else 2 B/param"
    )
    sleep_mode: bool = Field(
        False,
        description="vLLM only: unload = POST /sleep, load = POST /wake_up (vLLM --enable-sleep-mode, "
        "VLLM_SERVER_DEV_MODE=1) instead of a cold start; with an endpoint, it counts in the budget",
    )

    @field_validator("prompt_template")
    @classmethod
    def _has_prompt(cls, value: str) -> str:
        if "{prompt}" not in value:
            raise ValueError("must contain {prompt}")
        return value

    @model_validator(mode="after")
    def _endpoint_or_launchable(self) -> ExpertConfig:
        if self.backend == "openai" and self.endpoint is None:
            raise ValueError("backend 'openai' needs an endpoint")
        if self.sleep_mode and self.backend != "vllm":
            raise ValueError("sleep_mode applies only to vllm experts")
        if self.server_args and not (self.backend == "vllm" and self.endpoint is None):
            raise ValueError("server_args apply only to vllm servers that coe launches")
        if self.threads is not None and not (self.backend == "llamacpp" and self.endpoint is None):
            raise ValueError("threads apply only to llama.cpp servers that coe launches")
        return self

    @property
    def price(self) -> Price:
        if self.price_per_mtok is not None:
            return self.price_per_mtok
        each = LOCAL_PRICE_PER_B * self.params_b
        return Price(prompt=each, completion=each)

    @property
    def queue_limit(self) -> int:
        return self.max_queue or 4 * self.max_concurrency

    @property
    def launched(self) -> bool:
        """True when coe starts this expert's server itself."""
        return self.endpoint is None and self.backend in ("llamacpp", "vllm")


class ExpertsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experts: list[ExpertConfig] = Field(min_length=1)

    @field_validator("experts")
    @classmethod
    def _unique(cls, experts: list[ExpertConfig]) -> list[ExpertConfig]:
        names = [e.name for e in experts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate expert names: {', '.join(dupes)}")
        return experts


class RateLimit(BaseModel):
    """A token bucket per API key (per client address without keys), kept in Redis."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    requests_per_minute: float = Field(gt=0, description="sustained rate the bucket refills at")
    burst: int = Field(10, gt=0, description="requests that may arrive at once (the bucket's size)")


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Service settings. Relative paths are resolved against the config file's folder."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="COE_", populate_by_name=True)

    experts_file: Path = Path("experts.yaml")
    graphs_dir: Path = Path("../graphs")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    redis_url: str | None = Field(None, validation_alias=pydantic.AliasChoices("REDIS_URL", "redis_url"))
    state_dir: Path = Field(Path("~/.cache/coe"), description="logs, Redis data, assembled models")
    models_dir: Path | None = Field(None, description="assembled model files; null = STATE_DIR/models")
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    default_max_tokens: int = Field(512, gt=0)
    request_timeout_s: float = Field(300.0, gt=0, description="bounds a whole request (504 past it)")
    engine: Literal["direct", "langgraph"] = Field(
        "direct", description="graph executor that serves: coe's own (0.1 ms a run) or LangGraph's (~3-6 ms)"
    )
    max_body_bytes: int = Field(1 << 20, gt=0, description="larger request bodies get 413")
    max_messages: int = Field(1000, gt=0, description="messages per request")
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="on SIGTERM, open requests and streams may finish for this long"
    )
    batch_memory_budget_bytes: int | None = Field(
        None, gt=0, description="per batch worker; null = no limit; a model larger than it loads alone"
    )
    batch_max_attempts: int = Field(3, gt=0, description="tries per batch call before it is dead-lettered")
    batch_visibility_timeout_s: float = Field(60.0, gt=0, description="retake a dead worker's calls after")
    batch_lease_s: float = Field(30.0, gt=0, description="expert/driver leases expire after (renewed at 1/3)")
    serve_memory_budget_bytes: int | None = Field(
        None,
        gt=0,
        description="memory for the experts coe serve hosts (model sizes as the batch manager counts "
        "them); null = every expert resident; calls to others wait on their stream for a swap",
    )
    serve_max_wait_s: float = Field(
        30.0, gt=0, description="calls waiting this long for their model make it the next one loaded"
    )
    batch_window_s: float = Field(
        86400.0, gt=0, description="what the Batch API's completion_window '24h' lasts (shorter in tests)"
    )
    log_format: Literal["text", "json"] = Field("text", description="json: one object per line")
    log_content: bool = Field(False, description="log prompts and answers (off: never)")
    rate_limit: RateLimit | None = Field(None, description="per-key request rate limit; null = off")
    config_file: Path | None = Field(None, exclude=True)

    _validate_keys = field_validator("api_keys", mode="before")(_csv)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        base = self.config_file.parent if self.config_file else Path.cwd()
        for name in ("experts_file", "graphs_dir"):
            value: Path = getattr(self, name)
            if not value.is_absolute():
                object.__setattr__(self, name, (base / value).resolve())
        object.__setattr__(self, "state_dir", self.state_dir.expanduser())
        if self.models_dir is not None:
            object.__setattr__(self, "models_dir", self.models_dir.expanduser())
        return self

    @property
    def model_cache(self) -> Path:
        """Where packaged GGUFs are assembled: ``models_dir``, else ``state_dir/models``."""
        return self.models_dir or self.state_dir / "models"

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> Settings:
        """Read settings from ``path`` (default: the embedded ``config/coe.yaml``); ``overrides``
        (the command line's) win over ``COE_*`` variables, which win over the file."""
        path = (path or DEFAULT_CONFIG).resolve()
        text = _read(path)
        data, positions = yamlio.parse(text, str(path))
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}:1:1: (root): expected a mapping of settings")
        given = {k: v for k, v in overrides.items() if v is not None}
        data = {**data, **given, "config_file": path}
        try:
            settings = cls(**data)
            if not given:
                return settings
            # the command line's values win over the environment, which wins over the file
            plain = _WithoutEnvironment(**data)
        except pydantic.ValidationError as err:
            raise ConfigError(yamlio.problems_from(err, str(path), positions)) from None
        return settings.model_copy(update={k: getattr(plain, k) for k in given})


class _WithoutEnvironment(Settings):
    """Settings from the file and the given values only (``Settings.load``'s overrides)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}:1:1: (file): cannot read: {err.strerror}") from None


def load_experts(path: Path) -> list[ExpertConfig]:
    return yamlio.load_model(path, ExpertsFile).experts
