-- Threads, their items, attachment metadata and feedback.
-- Every row carries its owner; every query filters on it.
-- `seq` is a monotonic insertion sequence: it breaks ties between equal timestamps and
-- gives keyset pagination a total order that concurrent inserts cannot reshuffle.

CREATE TABLE threads (
    id          text PRIMARY KEY,
    owner       text NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    data        jsonb NOT NULL
);
CREATE INDEX threads_by_owner ON threads (owner, created_at, seq);

CREATE TABLE thread_items (
    thread_id   text NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    id          text NOT NULL,
    owner       text NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    type        text NOT NULL,
    created_at  timestamptz NOT NULL,
    data        jsonb NOT NULL,
    PRIMARY KEY (thread_id, id)
);
CREATE UNIQUE INDEX thread_items_by_seq ON thread_items (thread_id, seq);

CREATE TABLE attachments (
    id          text PRIMARY KEY,
    owner       text NOT NULL,
    thread_id   text REFERENCES threads (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    data        jsonb NOT NULL
);
CREATE INDEX attachments_by_owner ON attachments (owner, created_at);
CREATE INDEX attachments_by_thread ON attachments (thread_id);

CREATE TABLE item_feedback (
    thread_id   text NOT NULL,
    item_id     text NOT NULL,
    owner       text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('positive', 'negative')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (thread_id, item_id),
    FOREIGN KEY (thread_id, item_id) REFERENCES thread_items (thread_id, id) ON DELETE CASCADE
);
