-- The model transcript of each thread: every input and output item the Agents SDK saw,
-- server-side tool calls and their outputs included (ChatKit items do not keep those).
-- `turn` is the id of the ChatKit user message that started the turn, so retrying from that
-- message can drop the turn and everything after it.

CREATE TABLE agent_transcript (
    thread_id   text NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    owner       text NOT NULL,
    turn        text NOT NULL,
    data        jsonb NOT NULL,
    PRIMARY KEY (thread_id, seq)
);
CREATE INDEX agent_transcript_by_turn ON agent_transcript (thread_id, turn);
