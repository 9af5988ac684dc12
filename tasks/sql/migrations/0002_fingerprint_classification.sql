-- Classify once per fingerprint: the fingerprint row keeps the current
-- classification and deep analysis, and events of a classified fingerprint
-- inherit them without a provider call.

ALTER TABLE fingerprints
    ADD COLUMN category            TEXT,
    ADD COLUMN severity            TEXT,
    ADD COLUMN summary             TEXT,
    ADD COLUMN classifier          TEXT,
    ADD COLUMN classified_at       TIMESTAMPTZ,
    ADD COLUMN classified_release  TEXT,
    -- A worker that is classifying this fingerprint holds the claim until then.
    ADD COLUMN claimed_until       TIMESTAMPTZ,
    ADD COLUMN root_cause          TEXT,
    ADD COLUMN recommended_action  TEXT,
    ADD COLUMN deep_classifier     TEXT,
    ADD COLUMN analysed_at         TIMESTAMPTZ,
    ADD COLUMN deep_claimed_until  TIMESTAMPTZ;

ALTER TABLE error_events
    ADD COLUMN inherited BOOLEAN NOT NULL DEFAULT false;

ALTER TABLE llm_calls
    ADD COLUMN fingerprint TEXT;
