"""The agent's run context: the SDK's ``AgentContext`` plus the code cells of this run."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from chatkit.agents import AgentContext
from chatkit.types import WidgetItem
from pydantic import Field

from workbench.context import RequestContext
from workbench.widgets import CellView


@dataclass
class CodeCell:
    """One ``execute_python`` call's widget, from the first streamed character to the end."""

    item: WidgetItem
    view: CellView
    arguments: str = ""  # the raw JSON arguments streamed so far
    # Set once the user has been sent all of the code. The tool waits for it: an in-process
    # model finishes writing long before the client has been sent what it wrote, and the
    # code must be on screen before the cell shows as running.
    written: asyncio.Event = field(default_factory=asyncio.Event)


class WorkbenchContext(AgentContext[RequestContext]):
    # By tool call id. Kept here (not in the tool) so the stream adapter that sees the
    # model write the code and the tool that runs it share one widget, and so a Stop can
    # save each widget in the state it reached.
    cells: dict[str, CodeCell] = Field(default_factory=dict)
