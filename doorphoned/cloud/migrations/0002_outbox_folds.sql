-- legacy: 7
-- Folded refusals waiting for their summary event (doorphoned/cloud/folds.py): the door-log entry a run of
-- repeated refusals is folded into, and when the run ends unless another repeat comes (epoch seconds).
-- Kept with the entry's fold in one transaction, so a restart still sends the summary.
CREATE TABLE outbox_folds (
    log_id      INTEGER PRIMARY KEY,
    door        INTEGER NOT NULL,
    credential  TEXT    NOT NULL,
    due         REAL    NOT NULL
);
CREATE INDEX outbox_folds_due ON outbox_folds (due);
