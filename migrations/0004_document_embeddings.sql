-- Chunk embeddings for semantic ranking, where the server has the `vector` extension
-- (pgvector): the embedded Postgres ships it; a server may not (then search is full-text
-- alone and nothing here is created but the function).
--
-- `workbench_enable_vector_search()` creates the extension and `document_embeddings` when
-- the extension is available and the role may create it, and says whether the table exists.
-- This migration calls it once; a server with embeddings configured calls it again as it
-- starts, so pgvector installed after this migration ran is taken up too.
--
-- `document_embeddings` has at most one row per chunk: the embedding of `model` (with the
-- `dimensions` asked for, NULL for the model's own). A row of another model or dimensions is
-- stale and is embedded again in the background; a row without an embedding is claimed by an
-- embedder until `lease_until` (`claim` names the claim, so a late writer whose lease ran out
-- writes nothing).

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
        model       text NOT NULL,
        dimensions  integer,
        embedding   vector,
        lease_until timestamptz,
        claim       text,
        PRIMARY KEY (document_id, seq),
        FOREIGN KEY (document_id, seq) REFERENCES document_chunks (document_id, seq)
            ON DELETE CASCADE
    );
    RETURN true;
END;
$$;

SELECT workbench_enable_vector_search();
