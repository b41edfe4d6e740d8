-- Hosted document search (WORKBENCH_FILE_SEARCH=openai): each thread's document attachments
-- mirrored into one OpenAI vector store.
--
-- Every id OpenAI hands out is written here the moment it arrives, and a row goes only once
-- OpenAI has deleted what it names, so nothing is ever left behind at OpenAI unrecorded.
-- A row whose thread (a store) or attachment (a file) is gone is a deletion still owed to
-- OpenAI: the foreign key sets it NULL in the very transaction that deletes the thread or
-- the attachment. Deletion workers (any number of server processes) claim such rows by
-- pushing `retry_at` ahead, and after a failure try again later (`attempts`, doubling delay,
-- `delete_error` saying why).

CREATE TABLE openai_vector_stores (
    id            text PRIMARY KEY,  -- OpenAI's vs_...
    owner         text NOT NULL,
    thread_id     text UNIQUE REFERENCES threads (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0,
    retry_at      timestamptz NOT NULL DEFAULT now(),
    delete_error  text
);
CREATE INDEX openai_vector_stores_to_delete ON openai_vector_stores (retry_at)
    WHERE thread_id IS NULL;

-- `vector_store_id` is the store the file was last attached to, and `status` how OpenAI's
-- indexing of it there went (in_progress, completed, failed, cancelled; NULL: not attached
-- yet), `note` why it failed. A store rebuilt after expiring has another id, so every file
-- is attached again.
CREATE TABLE openai_files (
    id               text PRIMARY KEY,  -- OpenAI's file-...
    owner            text NOT NULL,
    attachment_id    text UNIQUE REFERENCES attachments (id) ON DELETE SET NULL,
    vector_store_id  text,
    status           text,
    note             text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    retry_at         timestamptz NOT NULL DEFAULT now(),
    delete_error     text
);
CREATE INDEX openai_files_to_delete ON openai_files (retry_at) WHERE attachment_id IS NULL;
