"""Which model answers, and when traces may leave the machine."""

from __future__ import annotations

import pytest
from agents import OpenAIChatCompletionsModel, OpenAIResponsesModel
from agents.tracing import get_trace_provider

from workbench.agent.demo import DEMO_MODEL_NAME, DemoModel
from workbench.agent.models import ModelCatalog, UnknownModelError
from workbench.config import Settings


def tracing_disabled() -> bool:
    return bool(get_trace_provider()._disabled)  # type: ignore[attr-defined]


def test_tracing_only_with_a_real_openai_key() -> None:
    try:
        ModelCatalog(Settings(_env_file=None, openai_api_key="sk-real"))
        assert not tracing_disabled()
        for settings in (
            Settings(_env_file=None),  # demo
            Settings(
                _env_file=None, openai_api_key="sk-x", openai_base_url="http://127.0.0.1:9/v1"
            ),
            Settings(_env_file=None, chat_completions_base_url="http://127.0.0.1:9/v1"),
        ):
            ModelCatalog(settings)
            assert tracing_disabled(), settings.resolved_provider
    finally:
        ModelCatalog(Settings(_env_file=None))  # leave tracing off for the other tests


def test_provider_choice_and_allow_list() -> None:
    demo = ModelCatalog(Settings(_env_file=None, models=["gpt-x"]))
    assert isinstance(demo.model(demo.resolve(None)), DemoModel)
    assert demo.allowed == [DEMO_MODEL_NAME]  # the demo offers nothing else

    openai = ModelCatalog(
        Settings(_env_file=None, openai_api_key="sk-x", model="gpt-a", models=["gpt-b"])
    )
    assert isinstance(openai.model("gpt-b"), OpenAIResponsesModel)
    assert openai.resolve("gpt-b") == "gpt-b" and openai.resolve(None) == "gpt-a"
    with pytest.raises(UnknownModelError, match="gpt-a, gpt-b"):
        openai.resolve("gpt-c")

    local = ModelCatalog(Settings(_env_file=None, chat_completions_base_url="http://h/v1"))
    assert isinstance(local.model(local.resolve(None)), OpenAIChatCompletionsModel)
    ModelCatalog(Settings(_env_file=None))
