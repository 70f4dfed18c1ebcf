"""Content negotiation on `Accept`: which of the media types a route offers does the client prefer?

Pure functions, no I/O. Ranking: quality first, then a specific range (`text/event-stream`) over a wildcard
(`text/*`, `*/*`), then the route's own order of preference.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["JSON", "NDJSON", "SSE", "best_match"]

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
JSON = "application/json"

_MAX_RANGES = 32


def _ranges(accept: str) -> list[tuple[str, str, float]]:
    """`text/html;q=0.9, */*;q=0.1` → [("text", "html", 0.9), ("*", "*", 0.1)]; malformed parts are skipped."""
    out: list[tuple[str, str, float]] = []
    for part in accept.split(",")[:_MAX_RANGES]:
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        if "/" not in media:
            continue
        kind, _, sub = media.partition("/")
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = max(0.0, min(1.0, float(value.strip())))
                except ValueError:
                    quality = 0.0
        if kind and sub:
            out.append((kind, sub, quality))
    return out


def _score(offered: str, ranges: list[tuple[str, str, float]]) -> tuple[float, int]:
    """(quality, specificity) of the most specific range that matches `offered`; (0, 0) if none does."""
    kind, _, sub = offered.partition("/")
    best: tuple[int, float] | None = None
    for r_kind, r_sub, quality in ranges:
        if (r_kind, r_sub) == (kind, sub):
            specificity = 2
        elif (r_kind, r_sub) == (kind, "*"):
            specificity = 1
        elif (r_kind, r_sub) == ("*", "*"):
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, quality)
    if best is None:
        return 0.0, 0
    return best[1], best[0]


def best_match(accept: str | None, offered: Sequence[str]) -> str | None:
    """The offered type the client prefers; the first offered for no/empty `Accept`; None if it accepts none."""
    if accept is None or not accept.strip():
        return offered[0]
    ranges = _ranges(accept)
    if not ranges:
        return offered[0]
    scored = [(*_score(media, ranges), -index, media) for index, media in enumerate(offered)]
    quality, _, _, media = max(scored)
    return media if quality > 0 else None
