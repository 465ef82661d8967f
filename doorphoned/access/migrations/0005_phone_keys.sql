-- Phone credentials (issue 13, docs/phone.md): P-256 public keys per user, made on the phone. Removing the user
-- removes its phones in the same transaction (ON DELETE CASCADE). `tag` is the 4 bytes a BLE advert names the key
-- by (SHA-256 of the point, truncated): unique on the unit, so a tag names one key.
CREATE TABLE phone_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    public_point BLOB NOT NULL UNIQUE,             -- X9.62 uncompressed point, 65 bytes
    tag          BLOB NOT NULL UNIQUE,
    modes        TEXT NOT NULL,                    -- JSON list of nfc, shake, hands-free, tap
    expires      TEXT,                             -- ISO 8601 with offset; NULL = no expiry
    source       TEXT NOT NULL DEFAULT 'local',    -- 'local' (doorphonectl) or 'cloud' (sync)
    added        TEXT NOT NULL
);
CREATE INDEX phone_keys_user ON phone_keys (user_id);

-- The highest BLE counter granted per public key (not per key id, and not cascaded): a key removed and enrolled
-- again, or a user replaced by a sync, does not reopen its old tokens to replay.
CREATE TABLE phone_counters (
    public_point BLOB PRIMARY KEY,
    counter      INTEGER NOT NULL
) WITHOUT ROWID;
