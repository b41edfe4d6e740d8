"""Search over one thread's documents: Postgres full-text search, core Postgres only.

* Each chunk's ``tsvector`` is built with its document's language (``english``, ``german``,
  …, else ``simple``); a query is parsed with ``websearch_to_tsquery`` in every language the
  thread's documents are in, OR-ed, so it matches each document as that document was
  indexed. One constant ``tsquery``: the GIN index answers it.
* Every word must match first (``websearch_to_tsquery``'s AND); when that finds fewer
  passages than asked for, passages with only some of the words follow, ranked after them.
* Ranked by ``ts_rank_cd`` (cover density, normalised by length), with a ``ts_headline``
  snippet computed for the passages returned only.
* Scoped by owner and thread in the same statement (the chunks carry both), so another
  user's or another thread's passages are never even ranked. The thread is named as
  ``ARRAY[thread_id] @> ARRAY[...]``, the form the GIN index holds it in next to the words
  (``migrations/0003_documents.sql``): one index scan finds the thread's matches only.
* With embeddings (``documents.ranking``), a vector ranking of the same scope is fused with
  the full-text one; whenever it is unavailable, full-text alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from workbench.documents.embeddings import Vector
from workbench.documents.ranking import (
    VectorSearch,
    candidates,
    reciprocal_rank_fusion,
    with_openings,
)

_HEADLINE = (
    'MaxWords=35, MinWords=12, MaxFragments=2, FragmentDelimiter=" … ", '
    "StartSel=**, StopSel=**, HighlightAll=false"
)
ChunkKey = tuple[str, int]  # (document id, chunk number)
# For the snippets of a query of stop words only, which has no tsquery of its own.
_MATCHES_NOTHING = "'x' & !'x'"


@dataclass
class Passage:
    document_id: str
    seq: int
    name: str
    page: int | None
    heading: str | None
    body: str
    snippet: str
    attachment_id: str | None
    path: str | None


@dataclass(frozen=True)
class Scope:
    owner: str
    thread_id: str
    document_ids: Sequence[str] | None = None  # None: every document of the thread


async def search_passages(
    pool: AsyncConnectionPool,
    scope: Scope,
    query: str,
    limit: int,
    semantic: VectorSearch | None = None,
) -> list[Passage]:
    """The ``limit`` passages that best answer ``query``, best first; with ``semantic``, by
    meaning too (``documents.ranking``)."""
    # Embedded before a connection is taken: the endpoint may be slow.
    vector = await semantic.query_vector(query) if semantic is not None else None
    async with pool.connection() as conn:
        tsquery = await _tsquery(conn, scope, query)
        if semantic is not None and vector is not None:
            return await _hybrid(conn, scope, tsquery, semantic, vector, limit)
        if tsquery is None:
            return []
        keys = await full_text_ranking(conn, scope, tsquery, limit)
        return await passages(conn, keys, tsquery)


async def _hybrid(
    conn: AsyncConnection[Any], scope: Scope, tsquery: str | None, semantic: VectorSearch,
    vector: Vector, limit: int,
) -> list[Passage]:  # fmt: skip
    """The full-text and the vector rankings, fused."""
    depth = candidates(limit)
    by_words = await full_text_ranking(conn, scope, tsquery, depth) if tsquery else []
    by_meaning = await semantic.ranking(conn, scope, vector, depth)
    keys = reciprocal_rank_fusion([by_words, by_meaning], limit)
    found = await passages(conn, keys, tsquery or _MATCHES_NOTHING)
    return with_openings(found, set(by_words))


async def _tsquery(conn: AsyncConnection[Any], scope: Scope, query: str) -> str | None:
    """``query`` as one tsquery in every language of the scope's documents (its text), or
    None if it has no word to search for."""
    cursor = await conn.execute(
        """
        SELECT DISTINCT language::text FROM documents
        WHERE thread_id = %s AND owner = %s AND chunks > 0
        """,
        (scope.thread_id, scope.owner),
    )
    languages = sorted({row[0] for row in await cursor.fetchall()} | {"simple"})
    # Each distinct parse once: where stemming leaves the words alone, `english` and `simple`
    # give the same tsquery, and ranking every match against both halves costs twice.
    cursor = await conn.execute(
        "SELECT DISTINCT websearch_to_tsquery(language::regconfig, %s)::text "
        "FROM unnest(%s::text[]) AS language",
        (query, languages),
    )
    parts = sorted(text for (text,) in await cursor.fetchall() if text)
    return " | ".join(parts) or None  # | binds loosest: each part stays whole


async def full_text_ranking(
    conn: AsyncConnection[Any], scope: Scope, tsquery: str, limit: int
) -> list[ChunkKey]:
    """The best ``limit`` chunks for ``tsquery``: all its words first, then some of them."""
    keys = await _ranked(conn, scope, tsquery, limit, [])
    loose = _any_word(tsquery)
    if len(keys) < limit and loose is not None:
        keys += await _ranked(conn, scope, loose, limit - len(keys), keys)
    return keys


async def _ranked(
    conn: AsyncConnection[Any], scope: Scope, tsquery: str, limit: int, skip: list[ChunkKey]
) -> list[ChunkKey]:
    cursor = await conn.execute(
        """
        SELECT document_id, seq FROM document_chunks
        WHERE ARRAY[thread_id] @> ARRAY[%(thread)s::text] AND owner = %(owner)s
          AND tsv @@ %(q)s::tsquery
          AND (%(documents)s::text[] IS NULL OR document_id = ANY(%(documents)s))
          AND (document_id, seq) <> ALL(
              SELECT * FROM unnest(%(skip_documents)s::text[], %(skip_seqs)s::int[]))
        ORDER BY ts_rank_cd(tsv, %(q)s::tsquery, 1) DESC, document_id, seq
        LIMIT %(limit)s
        """,
        {
            "thread": scope.thread_id, "owner": scope.owner, "q": tsquery, "limit": limit,
            "documents": None if scope.document_ids is None else list(scope.document_ids),
            "skip_documents": [key[0] for key in skip], "skip_seqs": [key[1] for key in skip],
        },
    )  # fmt: skip
    return [(str(document_id), int(seq)) for document_id, seq in await cursor.fetchall()]


def _any_word(tsquery: str) -> str | None:
    """``tsquery`` with its ANDs made ORs, or None where that would change its meaning (a
    negation) or nothing (one word)."""
    if "!" in tsquery or " & " not in tsquery:
        return None
    return tsquery.replace(" & ", " | ")


async def passages(
    conn: AsyncConnection[Any], keys: Sequence[ChunkKey], tsquery: str
) -> list[Passage]:
    """The passages of ``keys``, in that order, each with a snippet for ``tsquery``."""
    if not keys:
        return []
    cursor = conn.cursor(row_factory=class_row(Passage))
    await cursor.execute(
        f"""
        SELECT c.document_id, c.seq, d.name, c.page, c.heading, c.body,
               ts_headline(c.language, c.body, %(q)s::tsquery, '{_HEADLINE}') AS snippet,
               d.attachment_id, d.path
        FROM unnest(%(documents)s::text[], %(seqs)s::int[]) WITH ORDINALITY
             AS k(document_id, seq, position)
        JOIN document_chunks c ON c.document_id = k.document_id AND c.seq = k.seq
        JOIN documents d ON d.id = c.document_id
        ORDER BY k.position
        """,
        {"q": tsquery, "documents": [k[0] for k in keys], "seqs": [k[1] for k in keys]},
    )
    return await cursor.fetchall()
