"""What a tool plug-in may be built with: the server's shared parts, chosen settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from openai import AsyncOpenAI
from psycopg_pool import AsyncConnectionPool

from workbench.config import Settings
from workbench.files.blobs import BlobStore
from workbench.files.signing import UrlSigner
from workbench.sandbox.manager import KernelManager
from workbench.sandbox.workspaces import Workspaces

Provider = Literal["openai", "chat_completions", "demo"]


@dataclass(frozen=True)
class ToolServices:
    settings: Settings
    provider: Provider  # hosted tools only where the provider runs them
    kernels: KernelManager
    workspaces: Workspaces
    signer: UrlSigner
    blobs: BlobStore
    pool: AsyncConnectionPool  # the database, for tools that keep state there
    openai: AsyncOpenAI | None = None  # the OpenAI provider's client, for its hosted services
