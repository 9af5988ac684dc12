-- Notify and Sentry write-back tasks that could not be queued because the
-- broker did not reply. The beat sweep queues them again and deletes the row.
CREATE TABLE notify_outbox (
    event_id    TEXT NOT NULL,
    stage       TEXT NOT NULL,
    task        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, stage, task)
);
