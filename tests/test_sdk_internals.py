"""Every internal of a library we build on, in one place; each test fails when an upgrade
changes one, naming the module of ours that relies on it.

openai-chatkit 1.6.5
* ``ChatKitServer._process_streaming`` / ``_process_non_streaming`` /
  ``_process_streaming_impl`` — ``server.py`` runs requests the HTTP layer already parsed, and
  tells the client about the items a retry removes.
* ``chatkit.store._ID_PREFIXES`` — ``store/postgres.py`` keeps the SDK's id prefixes.
* ``chatkit.agents._EventWrapper`` and the fact that ``stream_agent_response`` treats it as an
  event from the context's queue — ``agent/stream.py`` sends what tool hooks streamed ahead of
  the next model event.
* ``AgentContext`` helpers all enqueue through ``AgentContext.stream`` — ``plugins.py``
  (``TurnContext.holding``) holds them by overriding it.
* ``stream_agent_response`` reads nothing of the run but ``stream_events()`` —
  ``agent/stream.py`` (``AdaptedRun``) stands in for ``RunResultStreaming``.
* ``ResponseStreamConverter``'s hooks — ``plugins.py`` (``ConverterWrapper``) forwards each.
* ``ThreadItemConverter.attachment_to_message_content`` / ``tag_to_message_content`` raise
  ``NotImplementedError`` — ``agent/converter.py`` implements them.

openai-agents 0.24.0
* ``agents.models.fake_id.FAKE_RESPONSES_ID`` — ``agent/stream.py`` and ``agent/session.py``
  re-key Chat Completions items.
* ``FileSearchTool`` is a dataclass, serialised from its fields into each request
  (``Converter._convert_tool``), and ``include_search_results`` makes the request ask for
  ``file_search_call.results`` — ``tools/file_search.py`` gives each turn a copy naming the
  thread's vector store.

simpleeval 1.0.8
* ``SimpleEval.nodes`` and its ``_eval_name`` / ``_eval_call`` / ``_eval_unaryop`` /
  ``_eval_binop`` handlers — ``tools/arithmetic.py`` allows only those nodes.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import get_args

import chatkit.agents
import chatkit.store
from agents import FileSearchTool
from agents.models import fake_id
from agents.models.openai_responses import Converter
from chatkit.agents import AgentContext, ResponseStreamConverter, ThreadItemConverter
from chatkit.server import ChatKitServer
from simpleeval import SimpleEval

from workbench.plugins import ConverterWrapper

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_sdks_are_pinned_to_the_versions_installed() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = dict(re.fullmatch(r"([\w-]+)==(.+)", d).groups() for d in dependencies if "==" in d)  # type: ignore[union-attr]
    assert pins == {"openai-chatkit": "1.6.5", "openai-agents": "0.24.0"}
    for name, pinned in pins.items():
        assert version(name) == pinned, name
    assert version("simpleeval") == "1.0.8"


def test_chatkit_server_entry_points() -> None:
    for name in ("_process_streaming", "_process_non_streaming", "_process_streaming_impl"):
        parameters = list(inspect.signature(getattr(ChatKitServer, name)).parameters)
        assert parameters == ["self", "request", "context"], name


def test_store_id_prefixes_cover_every_item_type() -> None:
    prefixes = chatkit.store._ID_PREFIXES
    assert set(get_args(chatkit.store.StoreItemType)) <= set(prefixes)


def test_context_events_are_wrapped_and_recognised() -> None:
    wrapped = chatkit.agents._EventWrapper("event")  # type: ignore[arg-type]
    assert wrapped.event == "event"
    source = inspect.getsource(chatkit.agents.stream_agent_response)
    assert "isinstance(event, _EventWrapper)" in source


def test_context_helpers_enqueue_through_stream() -> None:
    for name in ("add_workflow_task", "update_workflow_task", "start_workflow", "end_workflow"):
        source = inspect.getsource(getattr(AgentContext, name))
        assert "self.stream(" in source and "_events" not in source, name


def test_stream_agent_response_reads_only_stream_events() -> None:
    source = inspect.getsource(chatkit.agents.stream_agent_response)
    assert set(re.findall(r"\bresult\.(\w+)", source)) == {"stream_events"}


def test_the_converter_wrapper_forwards_every_hook() -> None:
    def hooks(cls: type) -> set[str]:
        return {name for name, _ in inspect.getmembers(cls, inspect.isfunction)
                if not name.startswith("_")}  # fmt: skip

    assert hooks(ResponseStreamConverter) == {
        "base64_image_to_url", "partial_image_index_to_progress", "file_citation_to_annotation",
        "container_file_citation_to_annotation", "url_citation_to_annotation",
    }  # fmt: skip
    overridden = {name for name in hooks(ConverterWrapper) if name in vars(ConverterWrapper)}
    assert overridden == hooks(ResponseStreamConverter)


def test_thread_item_converter_leaves_attachments_and_tags_to_us() -> None:
    for name in ("attachment_to_message_content", "tag_to_message_content"):
        assert "NotImplementedError" in inspect.getsource(getattr(ThreadItemConverter, name))


def test_a_file_search_tool_copied_per_turn_is_what_the_request_sends() -> None:
    template = FileSearchTool(vector_store_ids=[], include_search_results=True)
    assert dataclasses.is_dataclass(template)
    param, include = Converter._convert_tool(
        dataclasses.replace(template, vector_store_ids=["vs_1"])
    )
    assert param == {"type": "file_search", "vector_store_ids": ["vs_1"]}
    assert include == "file_search_call.results"


def test_the_fake_id_of_chat_completions_items() -> None:
    assert fake_id.FAKE_RESPONSES_ID == "__fake_id__"


def test_simpleeval_node_handlers() -> None:
    evaluator = SimpleEval()
    assert isinstance(evaluator.nodes, dict)
    for name in ("_eval_name", "_eval_call", "_eval_unaryop", "_eval_binop"):
        assert callable(getattr(evaluator, name)), name
