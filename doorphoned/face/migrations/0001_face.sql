-- after: access/0001 (templates belong to users)
-- Face templates (issue 12): several per user, each a 128-float face_recognition encoding sealed with the
-- device key (AES-GCM, context "face:<user id>"), so a copy of this file carries no usable biometric data.
-- ON DELETE CASCADE: removing a user (doorphonectl, the cloud, a sync) drops every template of theirs in the
-- same transaction as their PIN and cards.
CREATE TABLE face_templates (
    id        INTEGER PRIMARY KEY,
    user_id   TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    template  BLOB    NOT NULL,
    source    TEXT    NOT NULL CHECK (source IN ('local', 'cloud')),
    added     TEXT    NOT NULL,
    photo     TEXT                            -- kept photo's path (keep_photos), else NULL
);
CREATE INDEX face_templates_user ON face_templates (user_id);

-- One row, bumped on every change: the recognition worker reloads its templates when it moves.
CREATE TABLE face_version (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
);
INSERT INTO face_version (id, version) VALUES (1, 0);
CREATE TRIGGER face_templates_ins AFTER INSERT ON face_templates
    BEGIN UPDATE face_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER face_templates_del AFTER DELETE ON face_templates
    BEGIN UPDATE face_version SET version = version + 1 WHERE id = 1; END;
