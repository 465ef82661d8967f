-- legacy: 2
-- `log doors --door N` reads one door's history newest first.
CREATE INDEX door_log_door ON door_log (door, id);
