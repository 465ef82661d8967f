-- Delivery keys (the package room, issue 11): a temp key may name the user ids a delivery is for. A key
-- with recipients is a delivery key: when it opens, the unit logs a `package` entry, takes a capture and
-- tells the cloud (`evt/package`). JSON list of user ids; [] = an ordinary temp key.
ALTER TABLE temp_keys ADD COLUMN recipients TEXT NOT NULL DEFAULT '[]';
