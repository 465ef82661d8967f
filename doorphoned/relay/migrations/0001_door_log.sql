-- legacy: 1
-- The door log: every access decision, door-status change, alarm and lock fault, in order.
CREATE TABLE door_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          TEXT    NOT NULL,               -- ISO 8601, UTC
    kind        TEXT    NOT NULL,               -- access | door_status | alarm | lock_fault | relay_test
    door        INTEGER,                        -- NULL for unit-wide entries (tamper)
    credential  TEXT,                           -- exit_button | installer | ... (access entries)
    subject     TEXT,                           -- who or what: user, key, "exit button", "uid 0"
    granted     INTEGER,                        -- 1/0 for access entries, NULL otherwise
    reason      TEXT    NOT NULL DEFAULT '',    -- machine-readable reason or alarm/status name
    detail      TEXT    NOT NULL DEFAULT '{}'   -- JSON with the rest
);
CREATE INDEX door_log_ts ON door_log (ts);
