-- Enrolment photos kept for audit (issue 12, `[face] keep_photos`): the photo that produced a template is a
-- file under <state>/face-photos/, sealed with the device key, named by face_templates.photo (a random id
-- that says nothing of the person); photo_size is the sealed file's size (retention by bytes).
-- When a template with a kept photo goes (face remove, a user removed by any path: ON DELETE CASCADE, a sync
-- replacing faces) or retention drops its photo, the trigger notes the file in face_photo_doomed in the same
-- transaction; the daemon deletes the file right after the commit and then the note (face/photos.py). A
-- kill -9 in between leaves the note, and the start drains it: no face stays on disk for ever.
ALTER TABLE face_templates ADD COLUMN photo_size INTEGER;
CREATE UNIQUE INDEX face_templates_photo ON face_templates (photo) WHERE photo IS NOT NULL;

CREATE TABLE face_photo_doomed (
    photo  TEXT PRIMARY KEY
);
CREATE TRIGGER face_photo_gone AFTER DELETE ON face_templates WHEN old.photo IS NOT NULL
    BEGIN INSERT OR IGNORE INTO face_photo_doomed (photo) VALUES (old.photo); END;
CREATE TRIGGER face_photo_dropped AFTER UPDATE OF photo ON face_templates
    WHEN old.photo IS NOT NULL AND old.photo IS NOT new.photo
    BEGIN INSERT OR IGNORE INTO face_photo_doomed (photo) VALUES (old.photo); END;
