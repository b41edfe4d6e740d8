"""Every setting Workbench reads, in one typed place.

Nothing else in the package reads ``os.environ``: add a field here, document it in the
README's settings table, and pass the value down.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
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

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Resolved once so a later chdir cannot move the data under our feet.
        return value.expanduser().resolve()

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
