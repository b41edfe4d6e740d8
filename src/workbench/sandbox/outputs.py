"""What a cell produced, and how a kernel's iopub messages add up to it.

``Collector`` folds the messages of one cell into a ``CellOutput``: streams kept up to a
bound (what is cut is counted), displays in the order they were shown (each reduced to the
one format worth keeping by ``display.choose``), images written under the workspace's
``.outputs`` through the no-follow primitives, and the error with its traceback.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from workbench.sandbox.display import IMAGE_TYPES, Display, choose
from workbench.sandbox.workspace_fs import create_new_file

OUTPUTS_DIR = ".outputs"  # images a cell displays are saved here, inside the workspace
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # the largest image kept from a display, or shown inline
# Displays kept per cell (a loop of display() calls): a guard on memory and on the images
# written to .outputs; what the user is shown is capped lower, by a setting.
MAX_DISPLAYS = 200

CellStatus = Literal["ok", "error", "timeout", "cpu_limit", "disk_quota", "interrupted", "crashed"]


@dataclass
class CellError:
    name: str
    value: str
    traceback: str


@dataclass
class CellOutput:
    status: CellStatus = "ok"
    stdout: str = ""
    stderr: str = ""
    cut_characters: int = 0  # stream output dropped beyond the cap
    displays: list[Display] = field(default_factory=list)  # in the order they were shown
    displays_dropped: int = 0  # beyond MAX_DISPLAYS
    error: CellError | None = None
    duration: float = 0.0
    kernel_restarted: bool = False  # the kernel was replaced: its variables are gone

    @property
    def images(self) -> list[str]:
        """The workspace-relative paths of the images it displayed."""
        return [display.data for display in self.displays if display.mime in IMAGE_TYPES]


class Collector:
    """Folds iopub messages into a CellOutput, keeping at most ``max_chars`` of streams."""

    def __init__(
        self,
        output: CellOutput,
        max_chars: int,
        workspace: Path,
    ) -> None:
        self.output = output
        self.max_chars = max_chars
        self.workspace = workspace

    async def collect(
        self, message: dict[str, Any], on_stream: Callable[[str, str], Awaitable[None]] | None
    ) -> bool:
        """Take one message; True when the cell has finished."""
        kind, content = message["msg_type"], message["content"]
        if kind == "status":
            return bool(content.get("execution_state") == "idle")
        if kind == "stream":
            self.append(content.get("name", "stdout"), content.get("text", ""))
            if on_stream is not None:
                await on_stream(content.get("name", "stdout"), content.get("text", ""))
        elif kind in {"execute_result", "display_data"} and isinstance(content.get("data"), dict):
            self._display(content["data"], result=kind == "execute_result")
        elif kind == "error":
            self.output.status = "error" if self.output.status == "ok" else self.output.status
            traceback = _ANSI.sub("", "\n".join(content.get("traceback", [])))
            self.output.error = CellError(
                content.get("ename", "Error"), content.get("evalue", ""), traceback
            )
        return False

    def append(self, stream: str, text: str) -> None:
        current = self.output.stderr if stream == "stderr" else self.output.stdout
        room = max(0, self.max_chars - len(current))
        kept, self.output.cut_characters = (
            text[:room],
            self.output.cut_characters + max(0, len(text) - room),
        )
        if stream == "stderr":
            self.output.stderr += kept
        else:
            self.output.stdout += kept

    def _display(self, data: dict[str, Any], *, result: bool) -> None:
        if len(self.output.displays) >= MAX_DISPLAYS:
            self.output.displays_dropped += 1
            return
        kept = choose(data, result=result, max_chars=self.max_chars, save=self._save_image)
        if kept is not None:
            self.output.displays.append(kept)

    def _save_image(self, payload: Any, mime: str, extension: str) -> str | None:
        try:
            raw = payload.encode() if mime == "image/svg+xml" else base64.b64decode(payload)
        except (AttributeError, TypeError, ValueError, binascii.Error):
            return None  # not an image at all (a hand-made bundle): nothing to show
        if len(raw) > MAX_IMAGE_BYTES:
            return None
        try:
            name = f"{uuid.uuid4().hex[:16]}.{extension}"
            relative, fd = create_new_file(self.workspace, OUTPUTS_DIR, name)
            with os.fdopen(fd, "wb") as file:
                file.write(raw)
        except OSError:
            return None  # a link planted in the way: the image is dropped, nothing is written
        return relative
