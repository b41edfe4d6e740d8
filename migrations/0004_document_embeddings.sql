-- Chunk embeddings for semantic ranking, where the server has the `vector` extension
-- (pgvector): the embedded Postgres ships it; a server may not (then search is full-text
-- alone and nothing here is created but the function).
--
-- `workbench_enable_vector_search()` creates the extension and `document_embeddings` when
-- the extension is available and the role may create it, and says whether the table exists.
-- This migration calls it once; a server with embeddings configured calls it again as it
-- starts, so pgvector installed after this migration ran is taken up too.
--
-- `document_embeddings` has one row per chunk, added with the chunk (a statement trigger,
-- so a COPY of many chunks adds their rows in one go): the work list of the embedders, found
-- by index. A row without an embedding is waiting, or claimed by an embedder until
-- `lease_until` (`claim` names the claim, so a late writer whose lease ran out writes
-- nothing). A row with one holds the embedding of `model` with the `dimensions` asked for
-- (NULL: the model's own); of another model or dimensions than the configured ones, it is
-- stale and embedded again in the background. A row whose embedding failed `attempts` times
-- in a row is not claimed again before `lease_until`.

CREATE FUNCTION workbench_enable_vector_search() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('document_embeddings') IS NOT NULL THEN
        RETURN true;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        RETURN false;
    END IF;
    -- Two servers starting at once: one creates, the other then finds the table.
    PERFORM pg_advisory_xact_lock(hashtext('workbench_enable_vector_search'));
    IF to_regclass('document_embeddings') IS NOT NULL THEN
        RETURN true;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS vector;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'the vector extension is available but this role may not create it';
        RETURN false;
    END;
    CREATE TABLE document_embeddings (
        document_id text NOT NULL,
        seq         integer NOT NULL,
        owner       text NOT NULL,  -- the chunk's: a search is scoped on this table alone
        thread_id   text NOT NULL,
        model       text,
        dimensions  integer,
        embedding   vector,
        lease_until timestamptz,
        claim       text,
        attempts    integer NOT NULL DEFAULT 0,
        PRIMARY KEY (document_id, seq),
        FOREIGN KEY (document_id, seq) REFERENCES document_chunks (document_id, seq)
            ON DELETE CASCADE,
        CHECK (embedding IS NULL OR model IS NOT NULL)
    );
    CREATE INDEX document_embeddings_waiting ON document_embeddings (document_id DESC, seq)
        WHERE embedding IS NULL;
    -- Stale rows are found as the two ranges around the configured (model, dimensions).
    -- Both indexes hold embedded rows only: a chunk being indexed updates neither.
    CREATE INDEX document_embeddings_by_model
        ON document_embeddings (model, (coalesce(dimensions, 0))) WHERE embedding IS NOT NULL;
    CREATE INDEX document_embeddings_by_thread ON document_embeddings (thread_id, owner)
        WHERE embedding IS NOT NULL;
    CREATE OR REPLACE FUNCTION workbench_chunks_to_embed() RETURNS trigger
    LANGUAGE plpgsql AS $trigger$
    BEGIN
        INSERT INTO document_embeddings (document_id, seq, owner, thread_id)
        SELECT document_id, seq, owner, thread_id FROM added;
        RETURN NULL;
    END;
    $trigger$;
    DROP TRIGGER IF EXISTS document_chunks_to_embed ON document_chunks;
    CREATE TRIGGER document_chunks_to_embed AFTER INSERT ON document_chunks
        REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION workbench_chunks_to_embed();
    -- After the trigger, which locks out new chunks meanwhile: each chunk gets its row once.
    INSERT INTO document_embeddings (document_id, seq, owner, thread_id)
    SELECT document_id, seq, owner, thread_id FROM document_chunks;
    RETURN true;
END;
$$;

SELECT workbench_enable_vector_search();
