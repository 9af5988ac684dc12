-- Notifications to Slack and PagerDuty, and the write-back to Sentry.

-- One row per channel, event and stage: a redelivered notify task finds its
-- row and never sends twice. status moves pending -> sending -> sent, or to
-- folded (inside a cool-down window) or failed (permanent error, retries spent).
CREATE TABLE notify_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    channel          TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    stage            TEXT NOT NULL CHECK (stage IN ('classified', 'analysed')),
    fingerprint      TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'sending', 'sent', 'folded', 'failed')),
    -- Repeats folded into the window before this message, shown in it.
    folded_before    INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at          TIMESTAMPTZ,
    UNIQUE (channel, event_id, stage)
);

CREATE INDEX notify_deliveries_created ON notify_deliveries (created_at DESC);

-- The cool-down window of one channel, fingerprint and stage: who sent last,
-- when, and how many repeats were counted since.
CREATE TABLE notify_windows (
    channel        TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    stage          TEXT NOT NULL,
    opened_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    owner_event_id TEXT NOT NULL,
    folded         INTEGER NOT NULL DEFAULT 0,
    -- The folded count taken over by the owner when it opened the window.
    carried        INTEGER NOT NULL DEFAULT 0,
    -- True when the owner could not deliver: the next event may open the window again.
    released       BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (channel, fingerprint, stage)
);

-- The Sentry issue (group) of each event, once the Sentry API returned it.
CREATE TABLE sentry_issue_links (
    event_id    TEXT PRIMARY KEY,
    issue_id    TEXT NOT NULL,
    found_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
