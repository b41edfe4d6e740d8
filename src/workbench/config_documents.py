"""The settings of document search: one section of ``workbench.config.Settings``.

Apart only to keep ``config.py`` readable; the rules there hold here (read once from the
environment with the ``WORKBENCH_`` prefix, each in the README's settings table). The checks
that involve other settings (the provider a mode needs) are ``Settings``' own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DocumentSearchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WORKBENCH_", extra="ignore")

    file_search: Literal["postgres", "openai", "off"] = Field(
        default="postgres",
        description="Search over the documents of a thread: full-text (and vector) search in "
        "Postgres, OpenAI vector stores (the hosted file_search tool), or off.",
    )
    documents_max_mb: int = Field(
        default=50, ge=1, description="Largest document read for search, in MiB."
    )
    documents_max_pages: int = Field(
        default=500, ge=1, description="Pages (slides, sheets) read of one document at most."
    )
    documents_max_unpacked_mb: int = Field(
        default=256, ge=1, description="Largest unpacked size of a DOCX/PPTX/XLSX, in MiB."
    )
    documents_memory_mb: int = Field(
        default=1024, ge=128, description="Address space of the process reading a document."
    )
    documents_timeout: float = Field(
        default=300.0, gt=0, description="Seconds one document may take to read."
    )
    documents_workers: int = Field(
        default=2, ge=1, description="Documents read at once by one server process."
    )
    documents_search_wait: float = Field(
        default=10.0, ge=0,
        description="Seconds search_files waits for a document still being read.",
    )  # fmt: skip
    search_results: int = Field(
        default=5, ge=1, le=20, description="Passages one search_files call returns."
    )
    # Semantic ranking: chunk embeddings from any OpenAI-compatible /v1/embeddings endpoint.
    embeddings_model: str | None = Field(
        default=None,
        description="Embeddings model for semantic ranking of document search (fused with "
        "full-text search); unset: full-text search alone.",
    )
    embeddings_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible server of the embeddings model (Ollama, vLLM...); unset: "
        "the model provider's (OPENAI_BASE_URL or WORKBENCH_CHAT_COMPLETIONS_BASE_URL).",
    )
    embeddings_api_key: SecretStr | None = Field(
        default=None, description="Key for WORKBENCH_EMBEDDINGS_BASE_URL; unset: the provider's."
    )
    embeddings_dimensions: int | None = Field(
        default=None, ge=1, le=16000,
        description="Dimensions asked of the model (text-embedding-3-*); unset: its own.",
    )  # fmt: skip
    embeddings_batch: int = Field(
        default=64, ge=1, le=2048, description="Chunks embedded by one embeddings request."
    )
    embeddings_timeout: float = Field(
        default=60.0, gt=0, description="Seconds one background embeddings request may take."
    )
    embeddings_max_retries: int = Field(
        default=4, ge=0, description="Retries of a failed embeddings request (429, 5xx, network)."
    )
    embeddings_query_timeout: float = Field(
        default=3.0, gt=0,
        description="Seconds a search waits for its query's embedding before it ranks by "
        "full-text alone.",
    )  # fmt: skip
    openai_vector_store_idle_days: int = Field(
        default=7, ge=1, le=365,
        description="Days a thread's OpenAI vector store may go unused before OpenAI expires "
        "it (file_search=openai); it is rebuilt on the thread's next turn.",
    )  # fmt: skip
    openai_indexing_wait: float = Field(
        default=60.0, ge=0,
        description="Seconds a turn waits for OpenAI to index the documents it brings.",
    )  # fmt: skip
    openai_delete_retry: float = Field(
        default=10.0, gt=0,
        description="Seconds before a failed deletion at OpenAI is tried again (doubling each "
        "time, up to an hour).",
    )  # fmt: skip
