"""`sluice nats-auth DIR` and `sluice provision` (CONTRACT §6, §8): the operator's two NATS commands.

Exit codes: 0 done, 1 refused or failed (one line on stderr saying what and why), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from sluice.errors import InvalidInput, SluiceError

__all__ = ["register"]


def _nats_auth(args: argparse.Namespace) -> int:
    from sluice.nats_auth import write_auth

    try:
        files = write_auth(Path(args.directory), rotate=args.rotate)
    except (OSError, InvalidInput) as exc:
        sys.stderr.write(f"sluice nats-auth: {getattr(exc, 'message', exc)}\n")
        return 1
    out = [f'authorization include  {files.auth_conf}   (nats-server config: include "{files.auth_conf.name}")']
    out += [f"{identity:<12} seed  {path}" for identity, path in files.seeds.items()]
    out.append("Give each service its own seed as SLUICE_NATS_NKEY_FILE; keep the seeds secret (mode 0600).")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _provision(args: argparse.Namespace) -> int:
    from sluice.admin import provision_as_admin
    from sluice.config import CommonConfig
    from sluice.logs import setup_logging
    from sluice.provision import Allow

    try:
        config = CommonConfig.from_env()
    except InvalidInput as exc:
        sys.stderr.write(f"sluice provision: {exc.message}\n")
        return 2
    setup_logging("provision", config.log_level, "text")
    allow = Allow(
        fewer_replicas=args.allow_fewer_replicas,
        shorter_retention=args.allow_shorter_retention,
        smaller_limits=args.allow_smaller_limits,
    )
    try:
        asyncio.run(provision_as_admin(config, allow=allow, wait_s=args.wait))
    except SluiceError as exc:
        sys.stderr.write(f"sluice provision: {exc.message}\n")
        return 1
    sys.stdout.write(f"provisioned: streams, consumers and buckets with {config.replicas} replica(s)\n")
    return 0


def register(sub: Any) -> None:
    """Adds the NATS operator commands to `sluice`'s subparsers."""
    auth = sub.add_parser(
        "nats-auth",
        help="write the NATS authorization and one NKey seed per Sluice identity",
        description="Write DIR/auth.conf (a nats-server authorization include with one NKey user per Sluice identity "
        "and its publish/subscribe allow-lists) and each identity's seed DIR/<identity>.nk (mode 0600). Existing "
        "seeds are kept unless --rotate.",
    )
    auth.add_argument("directory", metavar="DIR")
    auth.add_argument("--rotate", action="store_true", help="make new seeds (every service then needs its new one)")
    auth.set_defaults(handler=_nats_auth)

    prov = sub.add_parser(
        "provision",
        help="create or update the streams, consumers and buckets (the only command that needs stream-admin rights)",
        description="Create or update Sluice's JetStream streams, consumers and KV buckets, as configured by "
        "SLUICE_REPLICAS, SLUICE_EVENTS_MAX_AGE, SLUICE_EVENTS_MAX_BYTES, ... and connected as SLUICE_NATS_NKEY_FILE "
        "(the admin seed). Never lowers replicas, shortens retention or lowers a byte limit unless a flag says so.",
    )
    prov.add_argument("--allow-fewer-replicas", action="store_true", help="let an existing stream lose replicas")
    prov.add_argument("--allow-shorter-retention", action="store_true", help="let an existing stream keep less")
    prov.add_argument(
        "--allow-smaller-limits", action="store_true", help="let an existing stream or bucket get lower byte limits"
    )
    prov.add_argument("--wait", type=float, default=30.0, metavar="S", help="how long to wait for JetStream (30)")
    prov.set_defaults(handler=_provision)
