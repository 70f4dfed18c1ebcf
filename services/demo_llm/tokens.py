"""Deterministic stand-ins for tokenization: how text is counted and how it is cut into streamed pieces.

Counting splits on words and single punctuation marks, so ``"17*23 = 391."`` is 6 tokens. Streaming cuts
text into word-sized pieces that keep their whitespace, so joining the pieces gives back the text exactly.
"""

from __future__ import annotations

import re

__all__ = ["argument_fragments", "count_tokens", "text_pieces"]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_PIECE_START = re.compile(r"(?<=\s)(?=\S)")
_ARGUMENT_FRAGMENT = re.compile(r"\w+|\s+|[^\w\s]+")


def count_tokens(text: str) -> int:
    """Number of tokens in ``text``: runs of word characters plus single punctuation marks."""
    return len(_TOKEN.findall(text))


def text_pieces(text: str) -> list[str]:
    """``text`` cut into words with their trailing whitespace; ``"".join(text_pieces(t)) == t``."""
    return [piece for piece in _PIECE_START.split(text) if piece]


def argument_fragments(arguments: str) -> list[str]:
    """Tool-call arguments (JSON text) cut the way a model streams them: words, spaces, punctuation runs."""
    return _ARGUMENT_FRAGMENT.findall(arguments) or [arguments]
