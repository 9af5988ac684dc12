-- Queries of the notify and Sentry write-back tasks (tasks/notify.py), by name.
-- Names start with notify_ or sentry_ so they never clash with queries.sql.

-- name: notify_event
SELECT e.event_id, e.fingerprint, e.context, e.category, e.severity, e.summary,
       e.classifier, e.classified_at, e.deep_status, e.root_cause, e.recommended_action,
       COALESCE(f.event_count, 1) AS event_count
FROM error_events e
LEFT JOIN fingerprints f ON f.fingerprint = e.fingerprint
WHERE e.event_id = %(event_id)s;

-- name: notify_claim_delivery
-- Create the row on first delivery; a redelivery gets the existing row back.
INSERT INTO notify_deliveries (channel, event_id, stage, fingerprint)
VALUES (%(channel)s, %(event_id)s, %(stage)s, %(fingerprint)s)
ON CONFLICT (channel, event_id, stage) DO UPDATE SET channel = EXCLUDED.channel
RETURNING id, status, folded_before, attempts, next_attempt_at,
          GREATEST(0, EXTRACT(EPOCH FROM (next_attempt_at - now())))::float AS wait_seconds,
          EXTRACT(EPOCH FROM (now() - created_at))::float AS age_seconds;

-- name: notify_open_window
-- Open the window for this delivery when none is open: first message for the
-- fingerprint, the cool-down passed, or the last owner could not deliver.
-- `carried` keeps the repeats counted while the previous window was open.
INSERT INTO notify_windows (channel, fingerprint, stage, owner_event_id)
VALUES (%(channel)s, %(fingerprint)s, %(stage)s, %(event_id)s)
ON CONFLICT (channel, fingerprint, stage) DO UPDATE
SET opened_at = now(), owner_event_id = EXCLUDED.owner_event_id,
    carried = notify_windows.folded, folded = 0, released = false
WHERE notify_windows.released
   OR notify_windows.opened_at < now() - make_interval(secs => %(cooldown)s)
RETURNING carried;

-- name: notify_fold_into_window
UPDATE notify_windows SET folded = folded + 1
WHERE channel = %(channel)s AND fingerprint = %(fingerprint)s AND stage = %(stage)s;

-- name: notify_release_window
-- The owner gave up: give its carried repeats back so the next message counts them.
UPDATE notify_windows SET released = true, folded = folded + carried, carried = 0
WHERE channel = %(channel)s AND fingerprint = %(fingerprint)s AND stage = %(stage)s
  AND owner_event_id = %(event_id)s;

-- name: notify_mark_sending
UPDATE notify_deliveries SET status = 'sending', folded_before = %(folded_before)s
WHERE id = %(id)s AND status = 'pending'
RETURNING id;

-- name: notify_mark_folded
UPDATE notify_deliveries SET status = 'folded'
WHERE id = %(id)s AND status = 'pending'
RETURNING id;

-- name: notify_mark_sent
UPDATE notify_deliveries SET status = 'sent', sent_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = %(id)s;

-- name: notify_mark_failed
UPDATE notify_deliveries SET status = 'failed', attempts = attempts + 1, last_error = %(error)s
WHERE id = %(id)s;

-- name: notify_mark_retry
UPDATE notify_deliveries
SET attempts = attempts + 1, last_error = %(error)s,
    next_attempt_at = now() + make_interval(secs => %(delay)s)
WHERE id = %(id)s
RETURNING attempts;

-- name: notify_deliveries_of_event
SELECT channel, stage, status, folded_before, attempts, last_error
FROM notify_deliveries
WHERE event_id = %(event_id)s
ORDER BY id;

-- name: notify_recent_deliveries
SELECT channel, event_id, stage, status, folded_before, attempts, last_error, created_at
FROM notify_deliveries
ORDER BY id DESC
LIMIT %(limit)s;

-- name: sentry_issue_of_event
SELECT issue_id FROM sentry_issue_links WHERE event_id = %(event_id)s;

-- name: sentry_save_issue
INSERT INTO sentry_issue_links (event_id, issue_id)
VALUES (%(event_id)s, %(issue_id)s)
ON CONFLICT (event_id) DO UPDATE SET issue_id = EXCLUDED.issue_id;

-- name: notify_unsettled
-- P0/P1 events of `event_ids` whose classified-stage delivery on a channel has not finished yet.
SELECT count(*) AS unsettled
FROM error_events e
CROSS JOIN unnest(%(channels)s::text[]) AS c(channel)
WHERE e.event_id = ANY(%(event_ids)s)
  AND e.severity = ANY(%(severities)s)
  AND NOT EXISTS (
      SELECT 1 FROM notify_deliveries d
      WHERE d.event_id = e.event_id AND d.channel = c.channel AND d.stage = 'classified'
        AND d.status IN ('sent', 'folded', 'failed'));

-- name: notify_outbox_add
INSERT INTO notify_outbox (event_id, stage, task)
VALUES (%(event_id)s, %(stage)s, %(task)s)
ON CONFLICT DO NOTHING;

-- name: notify_outbox_oldest
SELECT event_id, stage, task
FROM notify_outbox
ORDER BY created_at, event_id
LIMIT %(limit)s;

-- name: notify_outbox_remove
DELETE FROM notify_outbox
WHERE event_id = %(event_id)s AND stage = %(stage)s AND task = %(task)s;
