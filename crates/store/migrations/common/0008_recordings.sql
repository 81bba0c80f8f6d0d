-- After the call: each recording's playback copy, the practice's recording settings, break-glass grants,
-- and the queue of recordings waiting to be remuxed.

-- How many days a practice keeps its recordings (NULL: until it sets a limit), and whether they may be
-- played back at all.
ALTER TABLE practices ADD COLUMN recording_retention_days BIGINT CHECK (recording_retention_days > 0);
ALTER TABLE practices ADD COLUMN replay_enabled BIGINT NOT NULL DEFAULT 1 CHECK (replay_enabled IN (0, 1));

-- The playback copy: an encrypted WebM object. Its own key is sealed under the recording's data key
-- (`playback_key`), so erasing the data key erases the copy too.
ALTER TABLE recordings ADD COLUMN playback_key TEXT;
ALTER TABLE recordings ADD COLUMN playback_object TEXT;
ALTER TABLE recordings ADD COLUMN playback_len BIGINT;
ALTER TABLE recordings ADD COLUMN duration_ms BIGINT;
-- When a remux gave up, why.
ALTER TABLE recordings ADD COLUMN playback_error TEXT;
-- Retention: the keys were erased at `expired_at`, the objects and segment files removed at `erased_at`.
ALTER TABLE recordings ADD COLUMN expired_at BIGINT;
ALTER TABLE recordings ADD COLUMN erased_at BIGINT;

-- Recordings whose call has ended and that still need their playback copy. Written in the transaction
-- that completes the appointment, so a crash cannot lose one. Holds ids only.
CREATE TABLE recording_jobs (
    recording_id TEXT PRIMARY KEY REFERENCES recordings(id),
    patient_id   TEXT NOT NULL,
    practice_id  TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    attempts     BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT,
    run_at       BIGINT NOT NULL,
    lease_until  BIGINT,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX recording_jobs_due ON recording_jobs(state, run_at);

-- A clinician who was not in the call opened its recording in an emergency, with the reason they typed.
CREATE TABLE recording_break_glass (
    id           TEXT PRIMARY KEY,
    recording_id TEXT NOT NULL REFERENCES recordings(id),
    patient_id   TEXT NOT NULL,
    practice_id  TEXT NOT NULL,
    clinician_id TEXT NOT NULL REFERENCES users(id),
    reason       TEXT NOT NULL,
    granted_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX recording_break_glass_by_recording ON recording_break_glass(recording_id, clinician_id, expires_at);
CREATE INDEX recordings_by_clinician ON recordings(clinician_id, created_at);
