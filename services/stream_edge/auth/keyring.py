"""The API keys an edge accepts: `SLUICE_API_KEYS_FILE`, re-read when it changes (rotation and revocation need
no restart).

The file is checked at most once per `recheck_s` (one `stat`, on the request that comes due — no timer, no
thread), and re-read when its modification time, size or inode moved. A file that has become unreadable or
malformed fails closed: no key is accepted until it is fixed (a revocation with a typo in it must not leave the
revoked key working), and the error is logged with the line number, never a line's content.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from sluice.apikeys import KeyLine, hash_key, parse_keys_file
from sluice.errors import InvalidInput

__all__ = ["KeyRing"]

log = logging.getLogger(__name__)


class KeyRing:
    def __init__(self, path: Path, *, recheck_s: float = 1.0) -> None:
        self.path = path
        self.recheck_s = recheck_s
        self._by_digest: dict[str, KeyLine] = {}
        self._signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._load(strict=True)

    def lookup(self, key: str) -> KeyLine | None:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.recheck_s
            self._load(strict=False)
        return self._by_digest.get(hash_key(key))

    def __len__(self) -> int:
        return len(self._by_digest)

    def _load(self, *, strict: bool) -> None:
        """Re-reads the file if it changed. `strict` (at start): a missing or bad file is an error to raise."""
        try:
            st = os.stat(self.path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if signature == self._signature:
                return
            lines = parse_keys_file(self.path.read_text(), source=str(self.path))
        except (OSError, UnicodeDecodeError, InvalidInput) as exc:
            message = exc.message if isinstance(exc, InvalidInput) else f"{self.path}: {type(exc).__name__}"
            if strict:
                raise InvalidInput("invalid_keys_file", f"SLUICE_API_KEYS_FILE: {message}") from None
            if self._by_digest or self._signature is not None:
                log.error("API keys file unusable, accepting no key until it is fixed: %s", message)
            self._by_digest, self._signature = {}, None
            return
        self._by_digest = {line.digest: line for line in lines}
        if self._signature is not None:
            log.info("API keys file re-read", extra={"keys": len(lines)})
        self._signature = signature
