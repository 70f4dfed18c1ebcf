"""`sluice chat` — a conversation in the terminal: each line you type is a task in one context (CONTRACT §10).

Every answer streams live as in `sluice run`; the next line continues the same context, so the agent sees the
conversation so far (rebuilt by the edge from the earlier tasks' logs). `--context ID` picks up a conversation
started elsewhere (`sluice run`, the web page, an AI SDK chat id). An empty line is ignored; `/exit`, end of input
(Ctrl-D) or Ctrl-C at the prompt ends the conversation (exit code 0, or 130 for Ctrl-C); Ctrl-C during an answer
detaches as in `sluice run` and ends it too.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from sluice.client.http import EdgeClient, new_idempotency_key
from sluice.client.settings import edge_url
from sluice_cli.client_commands import EXIT_INTERRUPTED, EXIT_OK, Session, context_id_arg, read_line, run_command

__all__ = ["register"]

PROMPT = "you › "
_EXIT_WORDS = frozenset({"/exit", "/quit"})


def register(sub: Any) -> None:
    chat = sub.add_parser(
        "chat", help="a conversation in the terminal", description="A conversation with an agent in the terminal."
    )
    chat.add_argument("--agent", default="assistant", help="the agent (or crew) to talk to (default: assistant)")
    chat.add_argument("--context", metavar="ID", help="continue this conversation (a context id)")
    chat.set_defaults(handler=lambda a: run_command(_chat(a)))


async def _chat(args: argparse.Namespace) -> int:
    context = None if args.context is None else context_id_arg(args.context)
    loop = asyncio.get_running_loop()
    async with EdgeClient(edge_url()) as client:
        while True:
            sys.stdout.write(PROMPT)
            sys.stdout.flush()
            line = await read_line()
            if line is None or line.strip() in _EXIT_WORDS:
                if line is None:
                    sys.stdout.write("\n")
                return EXIT_OK
            text = line.strip()
            if not text:
                continue
            record = await client.submit(
                text, agent=args.agent, idempotency_key=new_idempotency_key(), context_id=context
            )
            if context is None and record.context_id:
                context = record.context_id
                sys.stderr.write(
                    f"sluice: conversation {context} (continue it later: sluice chat --context {context})\n"
                )
            code = await Session(client, record.id, cancel_on_second_interrupt=True).run(agent=record.agent)
            loop.remove_signal_handler(signal.SIGINT)  # back at the prompt, Ctrl-C ends the conversation
            if code == EXIT_INTERRUPTED:
                return code
