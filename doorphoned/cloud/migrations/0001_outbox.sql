-- legacy: 4
-- The cloud link: the durable event outbox and the record of executed commands.
CREATE TABLE outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,   -- per-unit increasing sequence (contract: `seq`)
    id       TEXT    NOT NULL UNIQUE,             -- event UUID
    type     TEXT    NOT NULL,                    -- evt/<type>
    payload  TEXT    NOT NULL                     -- the JSON published
);

-- A command id seen before is answered with the stored reply, never executed twice.
CREATE TABLE cloud_commands (
    id        TEXT PRIMARY KEY,
    name      TEXT NOT NULL,
    received  TEXT NOT NULL,
    reply     TEXT NOT NULL
);
CREATE INDEX cloud_commands_received ON cloud_commands (received);
