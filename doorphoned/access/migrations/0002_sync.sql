-- legacy: 5
-- Credential sync with the cloud (cloud-pushed configuration: core/migrations/0003_config_overrides.sql).
-- `source` tells who owns a row: 'local' (installer, doorphonectl) or 'cloud' (sync). A snapshot
-- replaces every cloud-owned user and temp key and leaves the installer's own alone.
ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
ALTER TABLE users ADD COLUMN schedule_id TEXT;          -- named schedule the windows come from
ALTER TABLE temp_keys ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
CREATE INDEX users_schedule ON users (schedule_id) WHERE schedule_id IS NOT NULL;
UPDATE temp_keys SET source = 'cloud' WHERE created_by = 'cloud';

-- Named weekly schedules pushed by the cloud; users referring to one get its windows copied.
CREATE TABLE schedules (
    id       TEXT PRIMARY KEY,
    windows  TEXT NOT NULL                               -- JSON list of weekly windows
);

-- Parts of a multi-message snapshot, kept until every part of that version has arrived. Bodies carry
-- PINs, so they are sealed (AES-GCM) with the device key, like temp-key PINs.
CREATE TABLE sync_parts (
    version  INTEGER NOT NULL,
    part     INTEGER NOT NULL,
    parts    INTEGER NOT NULL,
    body     BLOB    NOT NULL,
    staged   TEXT    NOT NULL,
    PRIMARY KEY (version, part)
);
