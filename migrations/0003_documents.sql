-- The documents of each thread, read for search: every document attachment a message names
-- and every workspace file the model adds; their text in chunks under a full-text index.
--
-- `status`: queued -> reading -> ready | failed; or duplicate, when the thread already has
-- the same bytes (`same_as`; such a row has no sha256 and no chunks of its own). A reader
-- holds a document while `lease_until` is in the future; one that died is replaced after it.
-- `lease_token` names the claim: a reader writes only while the document is still its claim.
-- `pages_done` of `pages` is what is searchable so far.

CREATE TABLE documents (
    id            text PRIMARY KEY,
    owner         text NOT NULL,
    thread_id     text NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    attachment_id text REFERENCES attachments (id) ON DELETE CASCADE,
    path          text,
    name          text NOT NULL,
    mime_type     text NOT NULL,
    kind          text NOT NULL,
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'reading', 'ready', 'failed', 'duplicate')),
    sha256        text,
    same_as       text REFERENCES documents (id) ON DELETE SET NULL,
    pages         integer,
    pages_total   integer,
    pages_done    integer NOT NULL DEFAULT 0,
    chunks        integer NOT NULL DEFAULT 0,
    language      regconfig NOT NULL DEFAULT 'simple',
    note          text,
    lease_until   timestamptz,
    lease_token   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((attachment_id IS NULL) <> (path IS NULL))
);
CREATE INDEX documents_by_thread ON documents (thread_id, owner);
-- What a reader's claim looks for, and only that: the claim is a look at this index, however
-- many documents are read already.
CREATE INDEX documents_to_read ON documents (created_at)
    WHERE status IN ('queued', 'reading') OR (status = 'duplicate' AND same_as IS NULL);
CREATE UNIQUE INDEX documents_one_per_attachment ON documents (thread_id, attachment_id);
CREATE UNIQUE INDEX documents_one_per_path ON documents (thread_id, path);
CREATE UNIQUE INDEX documents_same_bytes_once ON documents (thread_id, sha256);

CREATE TABLE document_chunks (
    document_id text NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    owner       text NOT NULL,
    thread_id   text NOT NULL,
    page        integer,
    heading     text,
    body        text NOT NULL,
    language    regconfig NOT NULL,
    -- The heading weighs more than the body: a passage under "Revenue" is about revenue.
    tsv         tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector(language, coalesce(heading, '')), 'A')
                    || to_tsvector(language, body)
                ) STORED,
    PRIMARY KEY (document_id, seq)
);
-- Ranking reads the tsvector of every match: kept in the row (compressed if need be), never
-- moved out to the TOAST table, where each would cost an index lookup and another page. The
-- body, read only for the passages returned, is what goes there when a row is too long.
ALTER TABLE document_chunks ALTER COLUMN tsv SET STORAGE MAIN;
-- The thread and the words in one GIN index, so a search reads the thread's matches only,
-- however many chunks other threads (or the same words elsewhere) have. Core Postgres has no
-- GIN operator class for text (btree_gin is an extension), but text[] has one: hence the
-- one-element array, which a search names as `ARRAY[thread_id] @> ARRAY[...]`.
CREATE INDEX document_chunks_search ON document_chunks USING gin ((ARRAY[thread_id]), tsv);
-- The thread alone, for what lists or scans a thread's chunks. Not (thread_id, owner): the
-- planner would AND that with the GIN index through `owner = ...`, reading a row id for
-- every chunk of a large thread.
CREATE INDEX document_chunks_by_thread ON document_chunks (thread_id);
