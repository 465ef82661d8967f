-- legacy: 4
-- Named counters shared by features: the outbox's dropped events (cloud), the credential sync
-- version (access). Legacy 0004_cloud.sql created it with the outbox.
CREATE TABLE counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
