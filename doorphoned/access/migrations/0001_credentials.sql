-- legacy: 3
-- after: relay/0001 (it adds user_id and key_id to the door log)
-- Local access control: users with private PINs and cards, temp keys with use counts, keypad lockouts.
-- PINs are stored only as HMAC-SHA256 under the device key (device.key, outside this file);
-- temp-key PINs are additionally sealed (AES-GCM) so their QR code can be shown again.
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT    NOT NULL,
    department  TEXT    NOT NULL DEFAULT '',
    enabled     INTEGER NOT NULL DEFAULT 1,
    doors       TEXT,                            -- JSON list of door ids; NULL = every door
    windows     TEXT    NOT NULL DEFAULT '[]',   -- JSON list of weekly windows; [] = any time
    created     TEXT    NOT NULL,
    updated     TEXT    NOT NULL
);

CREATE TABLE temp_keys (
    id               TEXT PRIMARY KEY,
    name             TEXT    NOT NULL,
    doors            TEXT    NOT NULL,           -- JSON list of door ids
    repeat           TEXT    NOT NULL CHECK (repeat IN ('never', 'daily', 'weekly')),
    valid_from       TEXT    NOT NULL,           -- ISO 8601 with offset
    valid_until      TEXT    NOT NULL,
    window           TEXT,                       -- JSON weekly window (daily/weekly)
    each_door_counts INTEGER CHECK (each_door_counts BETWEEN 1 AND 100),
    pin_sealed       BLOB    NOT NULL,
    created          TEXT    NOT NULL,
    created_by       TEXT    NOT NULL DEFAULT ''
);

-- One namespace for every PIN on the unit: a temp-key PIN can never equal a private PIN.
CREATE TABLE pins (
    hash     BLOB PRIMARY KEY,
    user_id  TEXT UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    key_id   TEXT UNIQUE REFERENCES temp_keys (id) ON DELETE CASCADE,
    CHECK ((user_id IS NULL) <> (key_id IS NULL))
) WITHOUT ROWID;

CREATE TABLE cards (
    uid      TEXT PRIMARY KEY,                   -- normalised hex
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added    TEXT NOT NULL
);
CREATE INDEX cards_user ON cards (user_id);

CREATE TABLE key_uses (
    key_id  TEXT    NOT NULL REFERENCES temp_keys (id) ON DELETE CASCADE,
    door    INTEGER NOT NULL,
    uses    INTEGER NOT NULL,
    PRIMARY KEY (key_id, door)
) WITHOUT ROWID;

CREATE TABLE lockouts (
    source  TEXT PRIMARY KEY,
    state   TEXT NOT NULL                        -- JSON LockoutState
);

ALTER TABLE door_log ADD COLUMN user_id TEXT;
ALTER TABLE door_log ADD COLUMN key_id TEXT;
