"""Sections into search-sized chunks, and the language a document is written in.

A chunk is what a search returns and the model reads: up to ``CHUNK_CHARS`` characters, cut at
paragraph breaks where possible, then at sentence ends, then at spaces, never inside a word
unless a "word" is longer than a chunk. Each keeps its section's page and heading, so the
answer can say "report.pdf, page 12".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from workbench.documents.formats import Section
from workbench.text import storable

CHUNK_CHARS = 1200
_MIN_CHARS = 200  # a shorter tail joins the chunk before it, within the same section
_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?…。])\s+")
# Runs of blanks but a single plain space (which needs no change, and is most of them).
_BLANKS = re.compile(r" [ \t\f\v\u00a0]+|[\t\f\v\u00a0][ \t\f\v\u00a0]*")

# ISO 639-1 codes py3langid reports -> the Postgres text-search configuration of that
# language (those Postgres ships; anything else is searched with ``simple``).
LANGUAGES = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "ca": "catalan", "da": "danish",
    "nl": "dutch", "en": "english", "fi": "finnish", "fr": "french", "de": "german",
    "el": "greek", "hi": "hindi", "hu": "hungarian", "id": "indonesian", "ga": "irish",
    "it": "italian", "lt": "lithuanian", "ne": "nepali", "no": "norwegian", "nb": "norwegian",
    "pt": "portuguese", "ro": "romanian", "ru": "russian", "sr": "serbian", "es": "spanish",
    "sv": "swedish", "ta": "tamil", "tr": "turkish", "yi": "yiddish",
}  # fmt: skip
_SURE = 0.9  # below this probability the language is not trusted: ``simple``


@dataclass(frozen=True)
class Chunk:
    text: str
    page: int | None
    heading: str | None


def chunks_of(sections: Iterable[Section]) -> Iterator[Chunk]:
    for section in sections:
        text = _tidy(section.text)
        heading = _tidy(section.heading).replace("\n", " ")[:300] if section.heading else None
        for piece in _pieces(text):
            yield Chunk(piece, section.page, heading or None)


def _tidy(text: str) -> str:
    lines = _BLANKS.sub(" ", storable(text)).split("\n")
    return "\n".join(line.strip() for line in lines).strip()


def _pieces(text: str) -> list[str]:
    pieces: list[str] = []
    current = ""
    for unit in _units(text):
        joined = f"{current}\n\n{unit}" if current else unit
        if len(joined) <= CHUNK_CHARS:
            current = joined
            continue
        if current:
            pieces.append(current)
        current = unit
    if current:
        short = len(current) < _MIN_CHARS
        if pieces and short and len(pieces[-1]) + len(current) < 2 * CHUNK_CHARS:
            pieces[-1] += "\n\n" + current
        else:
            pieces.append(current)
    return pieces


def _units(text: str) -> Iterator[str]:
    """Paragraphs, each no longer than a chunk (split at sentences, then spaces)."""
    for paragraph in _PARAGRAPHS.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= CHUNK_CHARS:
            yield paragraph
            continue
        yield from _packed(_SENTENCE_END.split(paragraph), " ")


def _packed(parts: list[str], glue: str) -> Iterator[str]:
    current = ""
    for part in parts:
        if len(part) > CHUNK_CHARS:
            if current:
                yield current
                current = ""
            words = part.split(" ")
            if len(words) > 1:
                yield from _packed(words, " ")
            else:
                yield from (part[i : i + CHUNK_CHARS] for i in range(0, len(part), CHUNK_CHARS))
            continue
        joined = f"{current}{glue}{part}" if current else part
        if len(joined) <= CHUNK_CHARS:
            current = joined
        else:
            yield current
            current = part
    if current:
        yield current


def detect_language(sample: str) -> str:
    """The Postgres text-search configuration for ``sample``'s language, else ``simple``."""
    if len(sample.strip()) < 40:
        return "simple"
    code, probability = language_model().classify(sample)
    return LANGUAGES.get(code, "simple") if probability >= _SURE else "simple"


@cache
def language_model() -> Any:
    """py3langid's model, loaded once per process (a third of a second)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
