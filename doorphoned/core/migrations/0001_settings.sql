-- legacy: 1
-- A key/value table kept from the first schema (nothing reads it today; dropping it would be a
-- migration of its own). Legacy 0001_door_log.sql created it together with the door log.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
