"""The programs the tests drive beyond Python, found one way for `make system-deps` and for the tests.

    program    Debian package   drives
    chromium   chromium         the web page, in headless Chromium
    tmux       tmux             the CLI in a real terminal
    node, npm  nodejs, npm      the official JavaScript clients and tool servers

A test that needs one is marked `@pytest.mark.needs_program("tmux")` (tests/conftest.py applies the mark). When
the program is missing the test is skipped, saying what to install — except under `CI=true`, where it fails: a CI
run must not pass with its browser and terminal tests skipped. Only the tests that need a program are marked.

`python tests/support/system_deps.py` (what `make system-deps` runs) installs what is missing when it may (root,
with apt-get) and, under `CI=true`, exits 1 naming whatever is still missing. Standard library only: it runs
before the virtualenv exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

__all__ = ["PROGRAMS", "absence", "find", "in_ci", "missing"]

PROGRAMS: dict[str, str] = {"chromium": "chromium", "tmux": "tmux", "node": "nodejs", "npm": "npm"}


def find(program: str) -> str | None:
    """The program's path on PATH (as the Makefile's `command -v` finds it), or None."""
    return shutil.which(program)


def missing(programs: list[str] | None = None) -> list[str]:
    return [p for p in programs or list(PROGRAMS) if find(p) is None]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def absence(program: str) -> str:
    package = PROGRAMS.get(program, program)
    return f"{program} is missing: install the Debian package {package} (`make system-deps` does, as root)"


def _install(packages: list[str]) -> None:
    print(f"installing {' '.join(packages)} (Debian packages)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            print(f"`{' '.join(command)}` failed with exit code {result.returncode}", file=sys.stderr)
            return


def main() -> int:
    absent = missing()
    if absent and os.geteuid() == 0 and find("apt-get") is not None:
        _install(sorted({PROGRAMS[p] for p in absent}))
        absent = missing()
    if not absent:
        return 0
    if in_ci():
        for program in absent:
            print(f"CI=true: {absence(program)}", file=sys.stderr)
        print(f"CI=true: the tests that drive {', '.join(absent)} cannot run; failing", file=sys.stderr)
        return 1
    print(f"missing {', '.join(absent)}: the tests that need them will be skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
