"""Every setting Workbench reads, in one typed place.

Nothing else in the package reads ``os.environ``: add a field here (or, for document search,
in its section ``config_documents``), document it in the README's settings table, and pass
the value down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from workbench.config_documents import DocumentSearchSettings

_S3_COPY_MAX_MB = 5 * 1024
LOCAL_DEV_ORIGINS = [
    "http://localhost:3000",
    "http://127.0.0.1:3000",
    "http://localhost:5173",
    "http://127.0.0.1:5173",
]


class Settings(DocumentSearchSettings):
    model_config = SettingsConfigDict(env_prefix="WORKBENCH_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "WORKBENCH_DATABASE_URL"),
        description="Postgres connection URL; when unset an embedded Postgres is started.",
    )
    data_dir: Path = Field(
        default=Path("./data"),
        description="Where the embedded Postgres, uploads and workspaces live.",
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port the HTTP server binds to.")
    db_pool_min_size: int = Field(default=1, ge=0, description="Connections kept open.")
    db_pool_max_size: int = Field(default=10, ge=1, description="Most connections opened.")
    db_connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a database connection."
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")

    # -- HTTP ------------------------------------------------------------------------------
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=LOCAL_DEV_ORIGINS, description="Comma-separated origins allowed by CORS."
    )
    max_request_bytes: int = Field(
        default=1_000_000, ge=1024, description="Largest /chatkit request body accepted."
    )

    # -- signed download URLs --------------------------------------------------------------
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key signing download URLs (32+ characters); unset: a random key kept "
        "in $WORKBENCH_DATA_DIR/secret_key.",
    )
    public_url: str | None = Field(
        default=None,
        description="Base of absolute URLs handed out, e.g. https://chat.example.com; unset: "
        "the base URL of the request.",
    )
    download_url_ttl: int = Field(
        # A week: links live on in saved widgets, and a reload should still show the figures.
        default=7 * 24 * 3600,
        ge=1,
        description="Seconds a signed download URL stays valid.",
    )

    # -- auth ------------------------------------------------------------------------------
    auth: Literal["none", "jwt", "header"] = Field(default="none")
    allow_insecure_bind: bool = Field(
        default=False, description="Allow auth=none on a non-loopback address."
    )
    local_user: str = Field(default="local", description="The user id when auth=none.")
    jwt_secret: SecretStr | None = Field(default=None, description="HS256 secret (auth=jwt).")
    jwt_jwks_url: str | None = Field(default=None, description="JWKS URL (auth=jwt).")
    jwt_audience: str | None = Field(default=None)
    jwt_issuer: str | None = Field(default=None)
    auth_header: str = Field(
        default="X-Forwarded-User", description="Header carrying the user id (auth=header)."
    )

    # -- model providers -------------------------------------------------------------------
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "WORKBENCH_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "WORKBENCH_OPENAI_BASE_URL"),
    )
    provider: Literal["auto", "openai", "chat_completions", "demo"] = Field(default="auto")
    chat_completions_base_url: str | None = Field(
        default=None, description="OpenAI-compatible Chat Completions server (Ollama, vLLM...)."
    )
    chat_completions_api_key: SecretStr | None = Field(default=None)
    model: str | None = Field(default=None, description="Default model name.")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated models the composer may pick."
    )
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    reasoning_summary: Literal["auto", "concise", "detailed"] | None = None
    title_model: str | None = Field(default=None, description="Model for thread titles.")
    transcription_model: str = Field(default="gpt-4o-mini-transcribe")
    instructions: str | None = Field(default=None, description="Extra system instructions.")
    max_turns: int = Field(default=12, ge=1, description="Model calls per response.")
    history_max_items: int = Field(
        default=200, ge=2, description="Transcript items sent to the model per turn."
    )
    model_timeout: float = Field(default=120.0, gt=0, description="Seconds per model request.")
    model_max_retries: int = Field(
        default=2, ge=0, description="Retries of a failed model request (429, 5xx, timeouts)."
    )

    # -- web search (OpenAI's hosted tool, or SearXNG for search_web) ------------------------
    openai_web_search: bool = Field(
        default=True, description="Offer OpenAI's hosted web search (OpenAI provider only)."
    )
    web_search_context_size: Literal["low", "medium", "high"] = Field(
        default="medium", description="How much of the pages found the search reads."
    )
    web_search_country: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2}$",
        description="The users' two-letter ISO country, to localise results.",
    )
    web_search_city: str | None = Field(default=None, min_length=1, max_length=100)
    web_search_region: str | None = Field(default=None, min_length=1, max_length=100)
    web_search_timezone: str | None = Field(default=None, description="An IANA timezone.")

    @field_validator("web_search_country")
    @classmethod
    def _upper_country(cls, value: str | None) -> str | None:
        return value.upper() if value is not None else None

    @field_validator("web_search_timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA timezone such as Europe/Paris") from None
        return value

    searxng_url: str | None = Field(
        default=None,
        description="A SearXNG instance (with json in its search.formats) for the search_web "
        "tool; unset: no search_web.",
    )
    searxng_timeout: float = Field(
        default=8.0, gt=0, description="Seconds a SearXNG search may take in all."
    )
    searxng_results: int = Field(
        default=5, ge=1, le=50, description="Results of a search the model is given."
    )
    searxng_text_chars: int = Field(
        default=400,
        ge=40,
        description="Characters kept of a query and of each result's title and snippet.",
    )
    searxng_max_kb: int = Field(
        default=2048, ge=16, description="Largest SearXNG answer read, in KiB."
    )
    # -- image generation (the OpenAI provider's hosted tool) --------------------------------
    openai_image_generation: bool = Field(
        default=True, description="Offer the hosted image generation tool (OpenAI provider)."
    )
    image_partials: int = Field(
        default=2, ge=0, le=3, description="Partial images streamed while an image is drawn."
    )
    image_size: str = Field(
        default="auto",
        pattern=r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$",
        description="Size of generated images: WIDTHxHEIGHT or auto.",
    )
    image_quality: Literal["low", "medium", "high", "auto"] = Field(
        default="auto", description="Quality of generated images."
    )
    image_max_mb: int = Field(default=50, ge=1, description="Largest generated image kept, in MiB.")

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Resolved once so a later chdir cannot move the data under our feet.
        return value.expanduser().resolve()

    # -- uploads ---------------------------------------------------------------------------
    blob_backend: Literal["local", "s3"] = Field(
        default="local", description="Where uploaded bytes live."
    )
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = Field(default=None, description="For MinIO, R2, ...")
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = Field(default="", description="Key prefix inside the bucket.")
    upload_max_mb: int = Field(default=100, ge=1, description="Largest upload accepted.")
    upload_mime_types: Annotated[list[str], NoDecode] = Field(
        default=[
            "image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf",
            "text/*", "application/json", "application/xml", "application/zip",
            "application/vnd.openxmlformats-officedocument.*", "application/vnd.ms-excel",
            "application/vnd.apache.parquet",
        ],
        description="Accepted MIME types (comma-separated; `type/*` patterns allowed).",
    )  # fmt: skip
    upload_ttl_hours: float = Field(
        default=24.0, gt=0, description="Uploads never attached to a message go after this."
    )
    image_input: Literal["data_url", "url"] = Field(
        default="data_url",
        description="How images reach the model: inline bytes, or a signed URL it fetches.",
    )

    # -- Python workspace sandbox ---------------------------------------------------------------
    sandbox: Literal["bubblewrap", "none"] = Field(
        default="bubblewrap",
        description="'none' runs kernels unsandboxed: only for trusted single-user setups.",
    )
    # A kernel with numpy, pandas and matplotlib loaded maps about 410 MiB: below 512 the
    # libraries the model is promised would fail to import.
    sandbox_memory_mb: int = Field(default=2048, ge=512, description="Address space per kernel.")
    sandbox_max_processes: int = Field(default=64, ge=8, description="Processes per kernel.")
    sandbox_tmp_mb: int = Field(default=256, ge=8, description="Size of /tmp and of /dev/shm.")
    sandbox_max_file_mb: int = Field(default=512, ge=1, description="Largest file a cell writes.")
    workspace_quota_mb: int = Field(
        default=2048, ge=1, description="Disk space one thread's workspace may take."
    )
    sandbox_cpu_seconds: float = Field(default=120.0, gt=0, description="CPU time per cell.")
    sandbox_timeout: float = Field(default=120.0, gt=0, description="Wall-clock time per cell.")
    kernel_idle_seconds: float = Field(
        default=900.0, gt=0, description="Shut a thread's kernel down after this long unused."
    )
    max_kernels: int = Field(default=8, ge=1, description="Live kernels at most (LRU eviction).")
    kernel_pool_size: int = Field(
        default=1, ge=0, description="Kernels started ahead of need, for a fast first cell."
    )
    tool_output_chars: int = Field(
        default=8000, ge=200, description="Characters of cell output sent back to the model."
    )
    cell_outputs: int = Field(
        default=20, ge=1, description="Outputs (displays, file previews) one cell widget shows."
    )
    cell_images: int = Field(
        default=8, ge=0, description="Images (displayed or written) one cell widget shows inline."
    )

    # -- calculator ------------------------------------------------------------------------
    calculator_max_chars: int = Field(
        default=1000, ge=10, le=100_000, description="Longest expression `calculate` reads."
    )
    # At most 4000: Python refuses to print an integer of more than 4300 digits.
    calculator_max_digits: int = Field(
        default=3000,
        ge=20,
        le=4000,
        description="Digits of the largest number (10**-this, the smallest).",
    )
    calculator_max_factorial: int = Field(
        default=1000, ge=1, le=100_000, description="Largest n of factorial(n) and comb(n, k)."
    )
    calculator_time_budget: float = Field(
        default=1.0, gt=0, le=60, description="Seconds one calculation may take."
    )

    @field_validator("secret_key")
    @classmethod
    def _strong_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError(
                "must be at least 32 characters; generate one with "
                "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _absolute_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http(s) URL, e.g. https://chat.example.com")
        return value.rstrip("/")

    @field_validator("searxng_url", "embeddings_base_url")
    @classmethod
    def _absolute_service_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http(s) URL, e.g. http://127.0.0.1:8888")
        return value.rstrip("/")

    @field_validator("cors_origins", "models", "upload_mime_types", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _auth_is_configured(self) -> Settings:
        if self.auth == "jwt" and not (self.jwt_secret or self.jwt_jwks_url):
            raise ValueError(
                "WORKBENCH_AUTH=jwt needs WORKBENCH_JWT_SECRET or WORKBENCH_JWT_JWKS_URL"
            )
        if self.blob_backend == "s3" and not self.s3_bucket:
            raise ValueError("WORKBENCH_BLOB_BACKEND=s3 needs WORKBENCH_S3_BUCKET")
        if self.blob_backend == "s3" and self.upload_max_mb > _S3_COPY_MAX_MB:
            raise ValueError(
                f"with WORKBENCH_BLOB_BACKEND=s3, WORKBENCH_UPLOAD_MAX_MB is at most "
                f"{_S3_COPY_MAX_MB} (S3 copies at most 5 GiB in one request)"
            )
        if self.provider == "openai" and not self.openai_api_key:
            raise ValueError("WORKBENCH_PROVIDER=openai needs OPENAI_API_KEY")
        if self.file_search == "openai" and self.resolved_provider != "openai":
            raise ValueError(
                "WORKBENCH_FILE_SEARCH=openai needs the OpenAI provider (OPENAI_API_KEY); "
                "use WORKBENCH_FILE_SEARCH=postgres with other providers"
            )
        if self.provider == "chat_completions" and not self.chat_completions_base_url:
            raise ValueError(
                "WORKBENCH_PROVIDER=chat_completions needs WORKBENCH_CHAT_COMPLETIONS_BASE_URL"
            )
        if (
            self.embeddings_model
            and not self.embeddings_base_url
            and self.resolved_provider == "demo"
        ):
            raise ValueError(
                "WORKBENCH_EMBEDDINGS_MODEL needs WORKBENCH_EMBEDDINGS_BASE_URL, or a model "
                "provider (OPENAI_API_KEY or WORKBENCH_CHAT_COMPLETIONS_BASE_URL) to serve it"
            )
        return self

    @property
    def resolved_provider(self) -> Literal["openai", "chat_completions", "demo"]:
        """``auto`` picks OpenAI with a key, else a Chat Completions URL, else the demo model."""
        if self.provider != "auto":
            return self.provider
        if self.openai_api_key:
            return "openai"
        if self.chat_completions_base_url:
            return "chat_completions"
        return "demo"

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return level

    @property
    def embedded_postgres_dir(self) -> Path:
        return self.data_dir / "postgres"


def load_settings() -> Settings:
    return Settings()
