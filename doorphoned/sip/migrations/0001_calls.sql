-- legacy: 6
-- Call history (`doorphonectl log calls`): one row per call as the user sees it. An outgoing call
-- that rang three legs is one row; the peer is the leg that answered (or the target when none did).
CREATE TABLE calls (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    type         TEXT    NOT NULL,          -- outgoing | incoming | missed | forwarded
    direction    TEXT    NOT NULL,          -- in | out
    reason       TEXT    NOT NULL DEFAULT '',  -- why it ended or was missed: dnd, no_answer, intercom_off, ...
    peer         TEXT    NOT NULL DEFAULT '',
    target       TEXT    NOT NULL DEFAULT '',
    started      TEXT    NOT NULL,
    answered     TEXT,
    ended        TEXT    NOT NULL,
    duration_s   REAL    NOT NULL DEFAULT 0,    -- answered -> ended
    opened       TEXT    NOT NULL DEFAULT '[]', -- doors opened by DTMF during the call (JSON list)
    quality      TEXT    NOT NULL DEFAULT '{}'  -- codec, loss, jitter, RTT from the audio stream (JSON)
);
CREATE INDEX calls_started ON calls (started);
