"""The services meet only on NATS: no service imports another service's package, and the core imports none."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("agent_runner", "tool_runner", "stream_edge", "demo_llm")
# The launcher starts services; everything else must not reach into one.
LAUNCHER = "sluice_cli"


def imported_packages(source: Path) -> set[str]:
    """Top-level package of every import in `source`, including imports inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), filename=str(source))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            for arg in node.args[:1]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value.split(".")[0])
    return found


def offenders(package_dir: Path, forbidden: set[str]) -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in package_dir.rglob("*.py")
        for name in imported_packages(path) & forbidden
    )


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another_services_package(service: str) -> None:
    others = set(SERVICES) - {service} | {LAUNCHER}
    assert offenders(ROOT / "services" / service, others) == []


def test_the_launcher_starts_services_by_name_and_imports_none() -> None:
    """`sluice edge` and the rest run a service's `main` by module name; nothing else of a service is the
    launcher's to read (what an edge will do, `sluice up` asks the edge)."""
    assert offenders(ROOT / "services" / LAUNCHER, set(SERVICES)) == []


def test_the_core_imports_no_service_and_not_the_launcher() -> None:
    assert offenders(ROOT / "shared" / "sluice", {*SERVICES, LAUNCHER}) == []


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "def f():\n    from tool_runner.tools import REGISTRY\n    import importlib\n"
        "    importlib.import_module('stream_edge.app')\n"
    )
    assert imported_packages(sneaky) >= {"tool_runner", "stream_edge"}
