"""`sluice nats-auth DIR`: a nats-server authorization include and one NKey seed per Sluice identity (CONTRACT §8).

    DIR/auth.conf          authorization { users: [ {nkey: U…, permissions: {publish: …, subscribe: …}}, … ] }
    DIR/<identity>.nk      the identity's seed (mode 0600): SLUICE_NATS_NKEY_FILE of the service that is it

A nats-server config `include`s auth.conf; the allow-lists come from `sluice.permissions`. Seeds already in DIR are
kept (running again re-renders the permissions for the same users); `rotate=True` makes new ones. Keys come from
the `nkeys` package: 32 random bytes encoded as a user seed, the public key is what the server stores.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import nkeys

from sluice.errors import InvalidInput
from sluice.permissions import IDENTITIES, permissions_of

__all__ = ["AuthFiles", "load_seed", "render_authorization", "write_auth"]

AUTH_FILE = "auth.conf"


@dataclass(frozen=True)
class AuthFiles:
    auth_conf: Path
    seeds: dict[str, Path]
    public_keys: dict[str, str]


def seed_path(directory: Path, identity: str) -> Path:
    return directory / f"{identity}.nk"


def load_seed(path: Path) -> nkeys.KeyPair:
    """The key pair in a seed file; a missing, unreadable or malformed one is one clear `InvalidInput`."""
    try:
        raw = path.read_bytes().strip()
    except OSError as exc:
        raise InvalidInput("nats_seed_unreadable", f"NKey seed file {path}: {exc.strerror or exc}") from None
    try:
        pair = nkeys.from_seed(bytearray(raw))
        public = pair.public_key.decode()
    except (nkeys.NkeysError, ValueError, IndexError) as exc:
        raise InvalidInput(
            "nats_seed_invalid", f"{path} does not hold an NKey user seed ({type(exc).__name__})"
        ) from None
    if not public.startswith("U"):
        raise InvalidInput("nats_seed_invalid", f"{path} holds an NKey seed that is not a user's")
    return pair


def _new_seed() -> bytes:
    return bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))


def _write_private(path: Path, data: bytes) -> None:
    """Created 0600 from the start (never readable by others, not even for a moment)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data + b"\n")
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def render_authorization(public_keys: dict[str, str]) -> str:
    """The include's text: one user per identity, its allow-lists, the identity named in a comment."""
    lines = [
        "# Sluice NATS authorization, written by `sluice nats-auth`: include it from the nats-server config.",
        "# One NKey user per Sluice identity; anything not in a user's allow-lists is refused by the server.",
        "authorization {",
        "  users: [",
    ]
    for identity, public in public_keys.items():
        perms = permissions_of(identity)
        lines += [
            f"    # {identity}",
            "    {",
            f"      nkey: {public}",
            "      permissions: {",
            f"        publish: {{ allow: {json.dumps(list(perms.publish))} }}",
            f"        subscribe: {{ allow: {json.dumps(list(perms.subscribe))} }}",
            "      }",
            "    }",
        ]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def write_auth(directory: Path, *, rotate: bool = False) -> AuthFiles:
    directory.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, Path] = {}
    public_keys: dict[str, str] = {}
    for identity in IDENTITIES:
        path = seed_path(directory, identity)
        if rotate or not path.exists():
            _write_private(path, _new_seed())
        else:
            os.chmod(path, 0o600)
        public_keys[identity] = load_seed(path).public_key.decode()
        seeds[identity] = path
    auth_conf = directory / AUTH_FILE
    auth_conf.write_text(render_authorization(public_keys))  # public keys only: the server's user may read it
    return AuthFiles(auth_conf=auth_conf, seeds=seeds, public_keys=public_keys)
