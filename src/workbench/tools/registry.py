"""The tools a server offers: one line per tool module, in the order the model sees them.

Each module has ``plugins(services) -> list[ToolPlugin]`` and returns nothing when its tool
cannot work here (a hosted tool on a provider without it, a service that is not configured),
so the model is never offered a tool that fails. Adding a tool is one module and one line.
"""

from __future__ import annotations

from workbench.plugins import Toolset
from workbench.tools import (
    calculator,
    file_search,
    files,
    image_generation,
    python,
    search_files,
    search_web,
    web_search,
)
from workbench.tools.services import ToolServices

_MODULES = (
    python,
    files,
    calculator,
    web_search,
    search_web,
    image_generation,
    search_files,
    file_search,
)


def build_toolset(services: ToolServices) -> Toolset:
    return Toolset(plugin for module in _MODULES for plugin in module.plugins(services))
