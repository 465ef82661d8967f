-- legacy: 5
-- Configuration set by the cloud (`config.set`), applied over the TOML file at start and reload.
CREATE TABLE config_overrides (
    key     TEXT PRIMARY KEY,                            -- dotted key, doors by id: doors.1.hold_time
    value   TEXT NOT NULL,                               -- JSON
    set_at  TEXT NOT NULL
);
