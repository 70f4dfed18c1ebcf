"""API keys (CONTRACT §8): made by `sluice keys add`, checked by the edge — the file holds hashes, never keys.

`SLUICE_API_KEYS_FILE` has one line per key, `#` starts a comment:

    <tenant> <key id> sha256:<hex digest of the key>

A key is `sluice_` + 32 random bytes (256 bits) in URL-safe base64. Such a key cannot be guessed, so one SHA-256
is a sufficient hash (a slow password hash protects low-entropy secrets; this one has none to protect), and the
edge finds a key by its digest in a dict: one hash and one lookup per request. Revoking a key is deleting its
line; rotating is adding the new key, moving clients over, then deleting the old line.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from sluice.errors import InvalidInput
from sluice.ids import parse_tenant

__all__ = ["KeyLine", "add_key", "hash_key", "new_key", "parse_keys_file"]

KEY_PREFIX = "sluice_"
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")


@dataclass(frozen=True, slots=True)
class KeyLine:
    tenant: str
    key_id: str
    digest: str  # hex SHA-256 of the key


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def parse_keys_file(text: str, *, source: str = "the keys file") -> list[KeyLine]:
    """Every key line; a malformed line is an `InvalidInput` naming its line number (never its content)."""
    lines: list[KeyLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        digest = _DIGEST_RE.fullmatch(parts[2]) if len(parts) == 3 else None
        if digest is None or not _KEY_ID_RE.fullmatch(parts[1]):
            raise InvalidInput(
                "invalid_keys_file", f"{source}, line {number}: expected '<tenant> <key id> sha256:<hex>'"
            )
        try:
            tenant = parse_tenant(parts[0])
        except InvalidInput as exc:
            raise InvalidInput("invalid_keys_file", f"{source}, line {number}: {exc.message}") from None
        lines.append(KeyLine(tenant=tenant, key_id=parts[1], digest=digest.group(1)))
    return lines


def add_key(path: Path, tenant: str) -> tuple[str, KeyLine]:
    """Makes a key for `tenant`, appends its line to `path` (created 0600 if missing); returns the key — shown
    once, stored nowhere — and its line."""
    tenant = parse_tenant(tenant)
    text = path.read_text() if path.exists() else ""
    existing = parse_keys_file(text, source=str(path))
    taken = {line.key_id for line in existing}
    key_id = secrets.token_hex(4)
    while key_id in taken:
        key_id = secrets.token_hex(4)
    key = new_key()
    line = KeyLine(tenant=tenant, key_id=key_id, digest=hash_key(key))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        separator = "\n" if text and not text.endswith("\n") else ""
        f.write(f"{separator}{line.tenant} {line.key_id} sha256:{line.digest}\n")
    return key, line
