"""Every `bash` and `python` example in docs/clients.md runs, in order, against a live stack and succeeds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.stack import Stack, stack

__all__ = ["stack"]  # the fixture, imported for pytest

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def examples() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(DOC.read_text())]


def test_the_doc_has_runnable_examples_of_each_client() -> None:
    found = examples()
    assert [lang for lang, _ in found].count("bash") >= 2
    joined = "\n".join(code for _, code in found)
    for needle in ("sluice run", "sluice tail", "EdgeClient", "edge.input", "events_of_types", "task_events"):
        assert needle in joined, needle


def test_every_example_in_the_clients_doc_runs_against_a_live_stack(stack: Stack, tmp_path: Path) -> None:
    bin_dir = str(Path(sys.executable).parent)
    env = stack.client_env(SLUICE_NATS_URL=stack.nats_url, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for number, (lang, code) in enumerate(examples(), start=1):
        command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        where = f"example {number} ({lang}) of {DOC.name}:\n{code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        assert result.returncode == 0, where
        assert result.stdout.strip(), where
