"""`search_docs`: answers about Sluice from Sluice's own Markdown — offline, deterministic, explainable.

The corpus is `README.md` and `docs/*.md` at the project root, the directory holding `pyproject.toml`,
found by walking up from this file. An installed wheel has no such root; the tool then says "no docs
available" rather than failing. Scoring is term frequency over paragraphs, ranking first by how many
distinct query words a paragraph contains: plenty for a small doc set, and no index to keep fresh.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Annotated, NamedTuple

from msgspec import Meta

from .errors import ToolError

__all__ = ["NO_DOCS", "find_project_root", "search_docs", "search_paragraphs"]

NO_DOCS = "no docs available"
_WORD = re.compile(r"[a-z0-9]+")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*$")
_STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "in",
    "is", "it", "me", "my", "of", "on", "or", "the", "to", "what", "when", "where", "which", "who", "why",
    "with",
})  # fmt: skip
_MAX_PARAGRAPH_CHARS = 1500  # so that `limit` results stay well under the runtime's output cap


class _Paragraph(NamedTuple):
    file: str
    heading: str
    text: str


def search_docs(
    query: Annotated[str, Meta(min_length=1, max_length=500, description="words to look for")],
    limit: Annotated[int, Meta(ge=1, le=10, description="how many paragraphs to return")] = 3,
) -> str:
    """Search Sluice's own documentation (README and docs/) and return the best-matching paragraphs,
    each labelled with its file and section."""
    root = find_project_root(Path(__file__).resolve().parent)
    return NO_DOCS if root is None else search_paragraphs(root, query, limit)


def find_project_root(start: Path) -> Path | None:
    """The nearest directory at or above `start` that holds a `pyproject.toml`."""
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").is_file():
            return directory
    return None


def search_paragraphs(root: Path, query: str, limit: int = 3) -> str:
    """The search itself, over the docs under `root`; separate from the tool so tests can pick the root."""
    terms = list(dict.fromkeys(_words(query)))
    if not terms:
        raise ToolError("the query has no searchable words")
    paragraphs = [p for path in _doc_files(root) for p in _paragraphs(path, root)]
    if not paragraphs:
        return NO_DOCS
    ranked: list[tuple[int, int, int]] = []
    for index, paragraph in enumerate(paragraphs):
        counts = Counter(_words(f"{paragraph.heading} {paragraph.text}"))
        hits = [counts[term] for term in terms if counts[term]]
        if hits:  # more distinct terms first, then more occurrences, then document order
            ranked.append((-len(hits), -sum(hits), index))
    if not ranked:
        return f"no paragraphs match {query!r}"
    return "\n\n".join(_render(paragraphs[index]) for *_, index in sorted(ranked)[:limit])


def _words(text: str) -> list[str]:
    """Lower-case words without stop words, with a plural "s" dropped so "tasks" finds "task"."""
    words = (w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def _doc_files(root: Path) -> list[Path]:
    docs = root / "docs"
    files = [root / "README.md", *(sorted(docs.glob("*.md")) if docs.is_dir() else [])]
    return [path for path in files if path.is_file()]


def _paragraphs(path: Path, root: Path) -> list[_Paragraph]:
    """Blank-line separated blocks; a heading labels the blocks under it; fenced code stays in one block."""
    name = path.relative_to(root).as_posix()
    found: list[_Paragraph] = []
    heading, in_fence = "", False
    block: list[str] = []
    for line in [*path.read_text(encoding="utf-8", errors="replace").splitlines(), ""]:
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and (not stripped or _HEADING.match(stripped)):
            if block:
                found.append(_Paragraph(name, heading, "\n".join(block)))
                block = []
            if match := _HEADING.match(stripped):
                heading = match.group(1)
            continue
        block.append(line)
    if block:  # an unclosed fence at the end of the file
        found.append(_Paragraph(name, heading, "\n".join(block)))
    return found


def _render(paragraph: _Paragraph) -> str:
    label = f"{paragraph.file} § {paragraph.heading}" if paragraph.heading else paragraph.file
    text = paragraph.text
    if len(text) > _MAX_PARAGRAPH_CHARS:
        text = text[:_MAX_PARAGRAPH_CHARS].rstrip() + " …"
    return f"[{label}]\n{text}"
