-- Consultations and their recordings. Whose a recording is comes from its appointment when the
-- consultation starts, and the database itself holds it there: the consultation must name its
-- appointment's own patient, clinician and practice, and the recording its consultation's, through
-- composite foreign keys. Segments name only their recording, so they cannot belong to anyone else.

CREATE UNIQUE INDEX appointments_binding ON appointments(id, patient_id, clinician_id, practice_id);

CREATE TABLE consultations (
    id             TEXT PRIMARY KEY,
    appointment_id TEXT NOT NULL UNIQUE,
    patient_id     TEXT NOT NULL,
    clinician_id   TEXT NOT NULL,
    practice_id    TEXT NOT NULL,
    recording_id   TEXT NOT NULL UNIQUE,
    started_at     BIGINT NOT NULL,
    ended_at       BIGINT,
    FOREIGN KEY (appointment_id, patient_id, clinician_id, practice_id)
        REFERENCES appointments(id, patient_id, clinician_id, practice_id),
    UNIQUE (id, recording_id, patient_id, clinician_id, practice_id)
);

CREATE TABLE recordings (
    id              TEXT PRIMARY KEY,
    consultation_id TEXT NOT NULL UNIQUE,
    patient_id      TEXT NOT NULL,
    clinician_id    TEXT NOT NULL,
    practice_id     TEXT NOT NULL,
    -- The recording's data key, wrapped by the master key; deleting it erases the recording.
    wrapped_key     TEXT,
    created_at      BIGINT NOT NULL,
    FOREIGN KEY (consultation_id, id, patient_id, clinician_id, practice_id)
        REFERENCES consultations(id, recording_id, patient_id, clinician_id, practice_id)
);
CREATE INDEX recordings_by_patient ON recordings(patient_id, created_at);

CREATE TABLE recording_segments (
    recording_id TEXT NOT NULL REFERENCES recordings(id),
    idx          BIGINT NOT NULL CHECK (idx >= 0),
    reason       TEXT NOT NULL CHECK (reason IN ('start', 'mode_switch', 'reconnect', 'restart')),
    mode         TEXT NOT NULL CHECK (mode IN ('audio_only', 'video')),
    started_at   BIGINT NOT NULL,
    PRIMARY KEY (recording_id, idx)
);
