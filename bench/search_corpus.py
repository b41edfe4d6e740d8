"""What bench/search.py reads and searches: English words with Zipf frequencies, drawn into
a text PDF and into chunks bulk-loaded with COPY.

The words are the Python reference manual's topics (``pydoc_data``, in every CPython: ~2,800
English words), the n-th commonest drawn 1/n as often as the commonest, so a query of a few
words matches as many passages as words of their rank do.
"""

from __future__ import annotations

import asyncio
import collections
import random
import re
from collections.abc import Iterator
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pypdfium2 as pdfium
from fpdf import FPDF
from psycopg_pool import AsyncConnectionPool

PAGES, PAGE_CHARS = 200, 3000
NEEDLE = "quillwort"  # on the last page only: found once the whole document is searchable
BIG, SMALL, OTHERS = 100_000, 1_000, 100_000
CHUNKS_PER_DOCUMENT = 500
CHUNK_WORDS = 180  # ~1,050 characters: the chunker cuts at 1,200
QUERIES = 60


class Vocabulary:
    """English words ranked by how often the reference manual uses them, drawn with Zipf
    frequencies into sentences and paragraphs."""

    def __init__(self, seed: int) -> None:
        counts = collections.Counter(re.findall(r"\b(?:[a-z]{2,}|a)\b", " ".join(topics.values())))
        self.words = np.array([word for word, _ in counts.most_common()], dtype=object)
        weights = 1 / np.arange(1, len(self.words) + 1)
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)
        self.lengths = random.Random(seed)

    def draw(self, rows: int, words: int) -> np.ndarray:
        return self.words[self.rng.choice(len(self.words), size=(rows, words), p=self.p)]

    def sentences(self, words: list[str]) -> str:
        out, start = [], 0
        while start < len(words):
            end = start + self.lengths.randint(6, 24)
            sentence = " ".join(words[start:end])
            out.append(sentence[0].upper() + sentence[1:] + ".")
            start = end
        return " ".join(out)

    def page(self, chars: int) -> str:
        paragraphs = [self.sentences(list(row)) for row in self.draw(chars // 300, 52)]
        return "\n".join(paragraphs)


def make_pdf(path: Path, vocabulary: Vocabulary) -> None:
    pdf = FPDF()
    pdf.set_auto_page_break(False)
    pdf.set_font("helvetica", size=10)
    for index in range(PAGES):
        pdf.add_page()
        if index % 10 == 0:
            pdf.start_section(f"Chapter {index // 10 + 1}: {' '.join(vocabulary.draw(1, 3)[0])}")
        text = vocabulary.page(PAGE_CHARS)
        if index == PAGES - 1:
            text += f" The {NEEDLE} grows here."
        pdf.multi_cell(0, 4.5, text)
    pdf.output(str(path))
    assert len(pdfium.PdfDocument(path)) == PAGES


def plan() -> Iterator[tuple[str, str, int]]:
    """(owner, thread, chunks) of every thread loaded."""
    yield "big", "thr_big", BIG
    yield "small", "thr_small", SMALL
    for user in range(20):
        for thread in range(OTHERS // 20 // 1000):
            yield f"other_{user}", f"thr_other_{user}_{thread}", 1000


async def load(pool: AsyncConnectionPool) -> None:
    threads = list(plan())
    async with pool.connection() as conn:
        async with conn.cursor().copy(
            "COPY threads (id, owner, created_at, data) FROM STDIN"
        ) as copy:
            for owner, thread, _ in threads:
                await copy.write_row((thread, owner, "2026-01-01", "{}"))
        async with conn.cursor().copy(
            "COPY documents (id, owner, thread_id, path, name, mime_type, kind, status, pages,"
            " pages_done, chunks, language) FROM STDIN"
        ) as copy:
            for owner, thread, chunks in threads:
                for n in range(-(-chunks // CHUNKS_PER_DOCUMENT)):
                    name = f"doc-{n}.pdf"
                    await copy.write_row(
                        (f"doc_{thread}_{n}", owner, thread, name, name, "application/pdf",
                         "pdf", "ready", 170, 170, CHUNKS_PER_DOCUMENT, "english")
                    )  # fmt: skip
    # Two COPY streams, each with its own words: Postgres's tsvectors take a core each.
    halves = [threads[::2], threads[1::2]]
    await asyncio.gather(
        *(load_chunks(pool, Vocabulary(seed=10 + n), half) for n, half in enumerate(halves))
    )
    async with pool.connection() as conn:
        await conn.execute("VACUUM ANALYZE")


async def load_chunks(
    pool: AsyncConnectionPool, vocabulary: Vocabulary, threads: list[tuple[str, str, int]]
) -> None:
    async with pool.connection() as conn, conn.cursor().copy(
        "COPY document_chunks (document_id, seq, owner, thread_id, page, heading, body, language)"
        " FROM STDIN"
    ) as copy:  # fmt: skip
        for owner, thread, chunks in threads:
            heading = ""
            for start in range(0, chunks, 1000):
                for n, words in enumerate(vocabulary.draw(min(1000, chunks - start), CHUNK_WORDS)):
                    seq = start + n
                    if seq % 30 == 0:
                        heading = " ".join(vocabulary.draw(1, 3)[0]).title()
                    await copy.write_row(
                        (f"doc_{thread}_{seq // CHUNKS_PER_DOCUMENT}", seq % CHUNKS_PER_DOCUMENT,
                         owner, thread, seq % CHUNKS_PER_DOCUMENT // 3 + 1, heading,
                         vocabulary.sentences(list(words)), "english")
                    )  # fmt: skip
                await asyncio.sleep(0)  # let the other stream write too


async def queries(pool: AsyncConnectionPool, vocabulary: Vocabulary) -> list[str]:
    """2 or 3 distinct words, none a stop word, of each of some passages drawn as the loaded
    ones were (in neither thread measured)."""
    passages = [set(row) for row in vocabulary.draw(QUERIES, CHUNK_WORDS)]
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT w FROM unnest(%s::text[]) AS w WHERE to_tsvector('english', w) <> ''",
            (sorted(set().union(*passages)),),
        )
        content = {str(row[0]) for row in await cursor.fetchall()}
    pick = vocabulary.lengths
    return [
        " ".join(pick.sample(sorted(words & content), pick.choice((2, 3)))) for words in passages
    ]
