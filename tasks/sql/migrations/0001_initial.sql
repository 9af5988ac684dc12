-- Events, their grouping, every provider call, and payloads that could not be processed.

CREATE TABLE error_events (
    id                  BIGSERIAL PRIMARY KEY,
    event_id            TEXT NOT NULL UNIQUE,
    fingerprint         TEXT NOT NULL,
    received_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    context             JSONB NOT NULL,
    category            TEXT CHECK (category IN ('RATE_LIMIT', 'AUTHENTICATION', 'VALIDATION',
                            'EXTERNAL_API', 'INFRASTRUCTURE', 'LOGIC_ERROR', 'UNKNOWN')),
    severity            TEXT CHECK (severity IN ('P0_CRITICAL', 'P1_HIGH', 'P2_MEDIUM', 'P3_LOW')),
    summary             TEXT,
    classifier          TEXT,
    classification_note TEXT,
    classified_at       TIMESTAMPTZ,
    prompt_tokens       INTEGER NOT NULL DEFAULT 0,
    completion_tokens   INTEGER NOT NULL DEFAULT 0,
    -- NULL: no deep analysis wanted; queued, done, failed.
    deep_status         TEXT CHECK (deep_status IN ('queued', 'done', 'failed')),
    deep_queued_at      TIMESTAMPTZ,
    root_cause          TEXT,
    recommended_action  TEXT,
    deep_classifier     TEXT,
    analysed_at         TIMESTAMPTZ,
    deep_prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    deep_completion_tokens  INTEGER NOT NULL DEFAULT 0,
    -- Classification attempts by workers and by the sweep, and the last error seen.
    attempts            INTEGER NOT NULL DEFAULT 0,
    sweeps              INTEGER NOT NULL DEFAULT 0,
    last_swept_at       TIMESTAMPTZ,
    last_error          TEXT
);

CREATE INDEX error_events_unclassified ON error_events (received_at) WHERE classified_at IS NULL;
CREATE INDEX error_events_fingerprint ON error_events (fingerprint);
CREATE INDEX error_events_received ON error_events (received_at DESC);

CREATE TABLE fingerprints (
    fingerprint TEXT PRIMARY KEY,
    signature   TEXT NOT NULL,
    first_seen  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    event_count BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE llm_calls (
    id                BIGSERIAL PRIMARY KEY,
    event_id          TEXT NOT NULL,
    tier              TEXT NOT NULL CHECK (tier IN ('bulk', 'deep')),
    model             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd          NUMERIC(12, 6) NOT NULL DEFAULT 0,
    latency_ms        INTEGER NOT NULL,
    outcome           TEXT NOT NULL,
    called_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX llm_calls_called_at ON llm_calls (called_at);

CREATE TABLE dead_letters (
    id          BIGSERIAL PRIMARY KEY,
    task_id     TEXT UNIQUE,
    payload     TEXT NOT NULL,
    error       TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
