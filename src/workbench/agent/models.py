"""Model providers: which ``agents.Model`` answers, chosen by settings.

* ``openai`` — the Responses API (``OPENAI_API_KEY``, optionally ``OPENAI_BASE_URL``);
* ``chat_completions`` — any OpenAI-compatible Chat Completions server (Ollama, vLLM,
  llama.cpp) at ``WORKBENCH_CHAT_COMPLETIONS_BASE_URL``;
* ``demo`` — the offline demo model, when nothing else is configured.
"""

from __future__ import annotations

from collections.abc import Mapping

from agents import Model, OpenAIChatCompletionsModel, OpenAIResponsesModel, set_tracing_disabled
from openai import AsyncOpenAI

from workbench.agent.demo import DEMO_MODEL_NAME, DemoModel
from workbench.config import Settings
from workbench.plugins import DemoAnswer, DemoTrigger

_DEFAULT_MODEL = {"openai": "gpt-5-mini", "chat_completions": "llama3.2", "demo": DEMO_MODEL_NAME}


class UnknownModelError(ValueError):
    pass


class ModelCatalog:
    """The models the composer may pick, and the ``Model`` behind each name."""

    def __init__(self, settings: Settings) -> None:
        self.provider = settings.resolved_provider
        self.default = settings.model or _DEFAULT_MODEL[self.provider]
        if self.provider == "demo":
            self.default = DEMO_MODEL_NAME
        allowed = settings.models if self.provider != "demo" else []
        self.allowed = list(dict.fromkeys([self.default, *allowed]))
        self.client = _client(settings)
        # Traces go to OpenAI's dashboard: only worth sending with a real OpenAI key.
        set_tracing_disabled(not (self.provider == "openai" and settings.openai_base_url is None))

    def resolve(self, requested: str | None) -> str:
        if requested is None or requested == self.default:
            return self.default
        if requested not in self.allowed:
            raise UnknownModelError(
                f"Model {requested!r} is not available here; choose one of: "
                + ", ".join(self.allowed)
            )
        return requested

    def model(
        self,
        name: str,
        demo_triggers: Mapping[str, DemoTrigger] | None = None,
        demo_answers: Mapping[str, DemoAnswer] | None = None,
    ) -> Model:
        """The model called ``name``; the demo model calls tools when their trigger fires."""
        if self.provider == "demo":
            return DemoModel(demo_triggers, demo_answers)
        assert self.client is not None
        if self.provider == "openai":
            return OpenAIResponsesModel(model=name, openai_client=self.client)
        return OpenAIChatCompletionsModel(model=name, openai_client=self.client)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.close()

    def describe(self) -> str:
        if self.provider == "demo":
            return (
                f"DEMO MODEL ({DEMO_MODEL_NAME}): no model provider is configured; replies are "
                "canned. Set OPENAI_API_KEY or WORKBENCH_CHAT_COMPLETIONS_BASE_URL."
            )
        where = self.client.base_url if self.client else "?"
        return f"{self.provider} at {where}, default model {self.default}, allowed {self.allowed}"


def _client(settings: Settings) -> AsyncOpenAI | None:
    common = {"timeout": settings.model_timeout, "max_retries": settings.model_max_retries}
    match settings.resolved_provider:
        case "openai":
            assert settings.openai_api_key is not None
            return AsyncOpenAI(
                api_key=settings.openai_api_key.get_secret_value(),
                base_url=settings.openai_base_url,
                **common,  # type: ignore[arg-type]
            )
        case "chat_completions":
            key = settings.chat_completions_api_key
            return AsyncOpenAI(
                # Local servers ignore the key, but the client insists on one.
                api_key=key.get_secret_value() if key else "unused",
                base_url=settings.chat_completions_base_url,
                **common,  # type: ignore[arg-type]
            )
        case _:
            return None
