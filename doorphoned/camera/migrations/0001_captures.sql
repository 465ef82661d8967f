-- Capture log (`doorphonectl log captures`): one row per JPEG snapshot kept under <state>/captures/.
-- The file is written (temp, fsync, rename) before its row commits; CaptureStore.sweep() at start removes
-- files without a row and rows without a file, so a kill -9 at any point leaves the two consistent.
CREATE TABLE captures (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        TEXT    NOT NULL,            -- ISO 8601 UTC, when the frame was taken
    trigger   TEXT    NOT NULL,            -- manual | call | granted | refused | forced_open | motion | package
    door      INTEGER,                     -- 1-16, or NULL when no door is concerned
    log_id    INTEGER,                     -- the door log entry this capture belongs to, if any
    size      INTEGER NOT NULL,            -- bytes of the JPEG file
    width     INTEGER NOT NULL,
    height    INTEGER NOT NULL,
    file      TEXT    NOT NULL UNIQUE      -- name inside <state>/captures/
);
CREATE INDEX captures_ts ON captures (ts);
