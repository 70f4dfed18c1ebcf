"""`sluice` — one console script; every service and every client command is a subcommand (CONTRACT §6).

Subcommands import their service lazily, so `sluice status` does not load FastAPI and the agent loop.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]


def _schema(_: argparse.Namespace) -> int:
    import msgspec

    from sluice.events import schemas

    sys.stdout.write(msgspec.json.format(msgspec.json.encode(schemas()), indent=2).decode() + "\n")
    return 0


def _service(module: str) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        import importlib

        importlib.import_module(module).main()
        return 0

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="AI agent tasks over NATS JetStream, streamed.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    add("up", _service("sluice_cli.up"), "run everything on this machine: NATS, the demo model and every service")
    add("edge", _service("stream_edge.main"), "run stream-edge (HTTP API, SSE/NDJSON streams)")
    add("agent-runner", _service("agent_runner.main"), "run an agent-runner")
    add("tool-runner", _service("tool_runner.main"), "run a tool-runner")
    add("demo-llm", _service("demo_llm.main"), "run the demo model server (OpenAI-compatible)")
    add("schema", _schema, "print the JSON Schema of every wire type")
    from sluice_cli import chat_command, client_commands, keys, nats_commands

    client_commands.register(sub)
    chat_command.register(sub)
    nats_commands.register(sub)
    keys.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    sys.exit(args.handler(args))
