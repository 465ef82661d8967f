-- Offline-signed temp keys (issue 13): a QR text that carries the key's terms signed by the cloud.
-- The unit never stores the keys themselves; it keeps what it must count or refuse.

-- Uses of a signed repeat-never key on each door (the synced keys' key_uses is tied to temp_keys rows, which a
-- signed key has none of). `until` is the key's valid_until (Unix seconds): past it the row is pruned.
CREATE TABLE signed_key_uses (
    key_id  TEXT    NOT NULL,
    door    INTEGER NOT NULL,
    uses    INTEGER NOT NULL,
    until   INTEGER NOT NULL,
    PRIMARY KEY (key_id, door)
) WITHOUT ROWID;

-- Key ids the cloud revoked (sync or `tempkey.revoke`), and every temp key removed from this unit: a signed
-- text of that id is refused. Kept until `until` (the key's valid_until, Unix seconds), then pruned: a key
-- past its end is refused as expired anyway.
CREATE TABLE revoked_keys (
    key_id   TEXT    PRIMARY KEY,
    until    INTEGER NOT NULL,
    revoked  TEXT    NOT NULL,               -- when the unit learnt it (ISO 8601)
    source   TEXT    NOT NULL                -- 'sync', 'command', 'removed'
) WITHOUT ROWID;
CREATE INDEX revoked_keys_until ON revoked_keys (until);

-- Cloud public keys delivered by the sync snapshot (`signing_keys`), next to those of [access] cloud_public_keys.
CREATE TABLE cloud_signing_keys (
    fingerprint  TEXT PRIMARY KEY,           -- hex of the first 4 bytes of SHA-256 over the DER public key
    pem          TEXT NOT NULL,
    added        TEXT NOT NULL
) WITHOUT ROWID;
