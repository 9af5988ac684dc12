-- Every query the workers and the command line run, by name.
-- tasks/store.py loads the blocks; a block runs from its `-- name:` line to the next one.

-- name: insert_event
INSERT INTO error_events (event_id, fingerprint, context)
VALUES (%(event_id)s, %(fingerprint)s, %(context)s)
ON CONFLICT (event_id) DO NOTHING
RETURNING id;

-- name: upsert_fingerprint
INSERT INTO fingerprints (fingerprint, signature, event_count)
VALUES (%(fingerprint)s, %(signature)s, 1)
ON CONFLICT (fingerprint) DO UPDATE
SET last_seen = now(), event_count = fingerprints.event_count + 1
RETURNING event_count;

-- name: get_event
SELECT event_id, fingerprint, context, category, severity, summary, classifier,
       classified_at, deep_status, attempts, sweeps, last_error
FROM error_events
WHERE event_id = %(event_id)s;

-- name: record_attempt
UPDATE error_events
SET attempts = attempts + 1, last_error = %(error)s
WHERE event_id = %(event_id)s;

-- name: save_classification
UPDATE error_events
SET category = %(category)s, severity = %(severity)s, summary = %(summary)s,
    classifier = %(classifier)s, classification_note = %(note)s, classified_at = now(),
    prompt_tokens = prompt_tokens + %(prompt_tokens)s,
    completion_tokens = completion_tokens + %(completion_tokens)s
WHERE event_id = %(event_id)s AND classified_at IS NULL
RETURNING id;

-- name: claim_deep
UPDATE error_events
SET deep_status = 'queued', deep_queued_at = now()
WHERE event_id = %(event_id)s AND deep_status IS NULL
RETURNING id;

-- name: save_deep
UPDATE error_events
SET root_cause = %(root_cause)s, recommended_action = %(recommended_action)s,
    deep_classifier = %(classifier)s, deep_status = %(status)s, analysed_at = now(),
    deep_prompt_tokens = deep_prompt_tokens + %(prompt_tokens)s,
    deep_completion_tokens = deep_completion_tokens + %(completion_tokens)s,
    last_error = COALESCE(%(error)s, last_error)
WHERE event_id = %(event_id)s AND deep_status = 'queued'
RETURNING id;

-- name: stale_unclassified
-- Rows left unclassified since `stale_after` seconds ago, oldest first. The
-- same age must pass again after a sweep before the row is swept once more.
SELECT event_id, sweeps
FROM error_events
WHERE classified_at IS NULL
  AND received_at < now() - make_interval(secs => %(stale_after)s)
  AND (last_swept_at IS NULL OR last_swept_at < now() - make_interval(secs => %(stale_after)s))
ORDER BY received_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: mark_swept
UPDATE error_events
SET sweeps = sweeps + 1, last_swept_at = now()
WHERE event_id = %(event_id)s;

-- name: stale_deep
SELECT event_id
FROM error_events
WHERE deep_status = 'queued'
  AND deep_queued_at < now() - make_interval(secs => %(stale_after)s)
ORDER BY deep_queued_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: touch_deep
UPDATE error_events SET deep_queued_at = now() WHERE event_id = %(event_id)s;

-- name: record_llm_call
INSERT INTO llm_calls (event_id, fingerprint, tier, model, prompt_tokens, completion_tokens, cost_usd,
                       latency_ms, outcome)
VALUES (%(event_id)s, %(fingerprint)s, %(tier)s, %(model)s, %(prompt_tokens)s, %(completion_tokens)s,
        %(cost_usd)s, %(latency_ms)s, %(outcome)s);

-- name: dead_letter
INSERT INTO dead_letters (task_id, payload, error)
VALUES (%(task_id)s, %(payload)s, %(error)s)
ON CONFLICT (task_id) DO NOTHING;

-- name: recent_events
SELECT event_id, received_at, category, severity, summary, classifier, deep_status,
       root_cause, recommended_action
FROM error_events
ORDER BY received_at DESC, id DESC
LIMIT %(limit)s;

-- name: count_events
SELECT count(*) AS total,
       count(*) FILTER (WHERE classified_at IS NOT NULL) AS classified,
       count(*) FILTER (WHERE deep_status = 'queued') AS deep_pending
FROM error_events;

-- name: costs_by_day
SELECT date_trunc('day', called_at)::date AS day, model, count(*) AS calls,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(cost_usd) AS cost_usd
FROM llm_calls
WHERE called_at >= now() - make_interval(days => %(days)s)
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: fingerprint_count
SELECT event_count FROM fingerprints WHERE fingerprint = %(fingerprint)s;

-- name: events_by_id
SELECT event_id, received_at, category, severity, summary, classifier, classified_at,
       deep_status, root_cause, recommended_action, attempts, last_error
FROM error_events
WHERE event_id = ANY(%(event_ids)s)
ORDER BY received_at, id;

-- name: get_fingerprint
SELECT fingerprint, signature, event_count, category, severity, summary, classifier,
       classified_at, classified_release, claimed_until, root_cause, recommended_action,
       deep_classifier, analysed_at
FROM fingerprints
WHERE fingerprint = %(fingerprint)s;

-- name: claim_fingerprint
-- Take the right to classify a fingerprint; only one worker gets it until the
-- claim expires, and only while the fingerprint still needs a classification
-- (none yet, too old, or made for another release).
UPDATE fingerprints
SET claimed_until = now() + make_interval(secs => %(claim_seconds)s)
WHERE fingerprint = %(fingerprint)s
  AND (claimed_until IS NULL OR claimed_until < now())
  AND (classified_at IS NULL
       OR classified_at < now() - make_interval(secs => %(reclassify_after)s)
       OR (%(release)s::text IS NOT NULL AND classified_release IS NOT NULL
           AND classified_release <> %(release)s::text))
RETURNING fingerprint;

-- name: save_fingerprint_classification
UPDATE fingerprints
SET category = %(category)s, severity = %(severity)s, summary = %(summary)s,
    classifier = %(classifier)s, classified_at = now(), classified_release = %(release)s,
    claimed_until = NULL
WHERE fingerprint = %(fingerprint)s;

-- name: release_fingerprint_claim
UPDATE fingerprints SET claimed_until = NULL WHERE fingerprint = %(fingerprint)s;

-- name: save_inherited
-- One statement for the common case: the event takes its fingerprint's
-- classification and deep analysis as they are now.
UPDATE error_events AS e
SET category = f.category, severity = f.severity, summary = f.summary,
    classifier = f.classifier, classification_note = 'inherited from its fingerprint',
    classified_at = now(), inherited = true,
    root_cause = f.root_cause, recommended_action = f.recommended_action,
    deep_classifier = f.deep_classifier
FROM fingerprints AS f
WHERE e.event_id = %(event_id)s AND e.classified_at IS NULL AND f.fingerprint = e.fingerprint
RETURNING e.category, e.severity, e.classifier;

-- name: claim_fingerprint_deep
-- Deep analysis runs once per fingerprint: the first event to claim it is analysed.
UPDATE fingerprints
SET deep_claimed_until = now() + make_interval(secs => %(claim_seconds)s)
WHERE fingerprint = %(fingerprint)s
  AND (analysed_at IS NULL OR analysed_at < now() - make_interval(secs => %(reanalyse_after)s))
  AND (deep_claimed_until IS NULL OR deep_claimed_until < now())
RETURNING fingerprint;

-- name: save_fingerprint_deep
UPDATE fingerprints
SET root_cause = %(root_cause)s, recommended_action = %(recommended_action)s,
    deep_classifier = %(classifier)s, analysed_at = now(), deep_claimed_until = NULL
WHERE fingerprint = %(fingerprint)s;

-- name: spend_today
SELECT COALESCE(sum(cost_usd), 0) AS cost_usd
FROM llm_calls
WHERE called_at >= date_trunc('day', now());

-- name: spend_this_month
SELECT COALESCE(sum(cost_usd), 0) AS cost_usd,
       extract(day FROM now()) AS day_of_month,
       extract(day FROM date_trunc('month', now()) + interval '1 month' - interval '1 day') AS days_in_month
FROM llm_calls
WHERE called_at >= date_trunc('month', now());

-- name: llm_call_totals
SELECT tier, model, count(*) AS calls, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(cost_usd) AS cost_usd
FROM llm_calls
GROUP BY tier, model
ORDER BY tier, model;

-- name: recent_dead_letters
SELECT id, task_id, error, payload, received_at
FROM dead_letters
ORDER BY id DESC
LIMIT %(limit)s;

-- name: count_dead_letters
SELECT count(*) AS total FROM dead_letters;
