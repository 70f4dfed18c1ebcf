"""`sluice keys add --tenant T [--file F]`: a new API key for tenant T (CONTRACT §6, §8).

The key is printed once, on stdout (so `KEY=$(sluice keys add --tenant acme)` works) and stored nowhere: the file
(`--file`, else `SLUICE_API_KEYS_FILE`) gets its tenant, key id and SHA-256 only. A running edge picks the new line
up by itself. Revoke a key by deleting its line (the key id is printed on stderr to find it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sluice.apikeys import add_key
from sluice.errors import InvalidInput

__all__ = ["register"]

USAGE_ERROR = 2


def _add(args: argparse.Namespace) -> int:
    target = args.file or os.environ.get("SLUICE_API_KEYS_FILE", "").strip()
    if not target:
        sys.stderr.write("sluice keys add: name the keys file with --file or SLUICE_API_KEYS_FILE\n")
        return USAGE_ERROR
    try:
        key, line = add_key(Path(target), args.tenant)
    except InvalidInput as exc:
        sys.stderr.write(f"sluice keys add: {exc.message}\n")
        return USAGE_ERROR
    except OSError as exc:
        sys.stderr.write(f"sluice keys add: cannot write {target}: {exc.strerror}\n")
        return USAGE_ERROR
    sys.stdout.write(key + "\n")
    sys.stderr.write(
        f"key {line.key_id} for tenant {line.tenant} added to {target} (only its hash is stored: keep the key now, "
        "it is not shown again). Clients send it as Authorization: Bearer <key>, or SLUICE_API_KEY=<key>.\n"
    )
    return 0


def register(sub: Any) -> None:
    """Adds `keys` and its subcommands to the CLI's subparsers."""
    keys = sub.add_parser("keys", help="manage the edge's API keys", description="Manage the edge's API keys.")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="make a key for a tenant", description=__doc__.split("\n\n")[0])
    add.add_argument("--tenant", required=True, help="the tenant the key acts for ([A-Za-z0-9_-]{1,64})")
    add.add_argument("--file", help="the keys file (default: $SLUICE_API_KEYS_FILE)")
    add.set_defaults(handler=_add)
