"""The model's tools as the catalog says they are right now, plus the agent-runner's own interactive tools.

`LiveTools` is a read-only mapping (name → `ToolDescriptor`) over a `CatalogView`: every lookup sees the catalog's
current state, so a tool whose schema changed, or a tool-runner that arrived, reaches the next model call without
a restart. Descriptors are rebuilt only when the view's version moves.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from agent_runner.interactive import INTERACTIVE_TOOLS
from agent_runner.ports import ToolDescriptor
from sluice.catalog import CatalogView, ToolAdvert

__all__ = ["LiveTools", "descriptor_of"]


def descriptor_of(tool: ToolAdvert) -> ToolDescriptor:
    spec = {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.input_schema},
    }
    return ToolDescriptor(name=tool.name, spec=spec, timeout_s=tool.timeout_s)


class LiveTools(Mapping[str, ToolDescriptor]):
    def __init__(self, view: CatalogView, own: Mapping[str, ToolDescriptor] = INTERACTIVE_TOOLS) -> None:
        self.view = view
        self.own = own
        self._built_at = -1
        self._tools: dict[str, ToolDescriptor] = {}

    def _current(self) -> dict[str, ToolDescriptor]:
        if self._built_at != self.view.version:
            built = {name: descriptor_of(advert) for name, (advert, _) in self.view.tool_adverts().items()}
            built.update(self.own)  # the runner's own tools are its own: a catalog entry cannot replace them
            self._tools, self._built_at = built, self.view.version
        return self._tools

    def __getitem__(self, name: str) -> ToolDescriptor:
        return self._current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())
