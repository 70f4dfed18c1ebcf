"""`python -m bench [name ...] [-- args for that benchmark]`: runs each registered benchmark module's `main(argv)`.

To add a benchmark, write `bench/<module>.py` with `def main(argv: list[str]) -> None` and register it below.
"""

from __future__ import annotations

import importlib
import sys
import time

# name → module; run in this order by `python -m bench`.
REGISTRY: dict[str, str] = {
    "edge": "bench.edge_fanout",
    "runner": "bench.runner_pipeline",
    "idle": "bench.idle_streams",
    "first-token": "bench.first_token",
    "durability": "bench.durability",
    "auth": "bench.auth_cost",
}


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")]
    extra = [a for a in argv if a.startswith("-")]
    if "--" in argv:
        split = argv.index("--")
        names, extra = argv[:split], argv[split + 1 :]
    if any(a in ("-h", "--help") for a in argv) and not names:
        print(f"usage: python -m bench [{'|'.join(REGISTRY)} ...] [-- benchmark options]")
        return 0
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}", file=sys.stderr)
        return 2
    for name in names or list(REGISTRY):
        started = time.monotonic()
        print(f"\n=== bench {name} ({REGISTRY[name]}) ===", flush=True)
        importlib.import_module(REGISTRY[name]).main(extra)
        print(f"=== bench {name} done in {time.monotonic() - started:.0f} s ===", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
