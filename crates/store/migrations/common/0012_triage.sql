-- The symptom checker. A logged-in patient's conversation is their data, bound to them when it begins;
-- the engine's session (what they typed and answered) is kept as JSON, and the state is recomputed from it.
-- Anonymous conversations are never stored.
CREATE TABLE triage_sessions (
    id          TEXT PRIMARY KEY,
    patient_id  TEXT NOT NULL REFERENCES users(id),
    complaint   TEXT NOT NULL CHECK (length(complaint) BETWEEN 1 AND 2000),
    session     TEXT NOT NULL,
    -- Set once the conversation has a result.
    disposition TEXT CHECK (disposition IN ('self-care', 'routine', 'urgent', 'emergency')),
    -- Raised by every change, so that two answers sent at once cannot both apply to the same state.
    version     BIGINT NOT NULL CHECK (version >= 0),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (id, patient_id)
);
CREATE INDEX triage_sessions_by_patient ON triage_sessions(patient_id, created_at);

-- A summary the patient chose to share with the clinician of an appointment, copied when it was booked:
-- bound to the appointment's patient, clinician and practice, and to a conversation of that same patient.
CREATE TABLE appointment_triage (
    appointment_id    TEXT PRIMARY KEY,
    patient_id        TEXT NOT NULL,
    clinician_id      TEXT NOT NULL,
    practice_id       TEXT NOT NULL,
    triage_session_id TEXT NOT NULL,
    summary           TEXT NOT NULL,
    shared_at         BIGINT NOT NULL,
    FOREIGN KEY (appointment_id, patient_id, clinician_id, practice_id)
        REFERENCES appointments(id, patient_id, clinician_id, practice_id),
    FOREIGN KEY (triage_session_id, patient_id) REFERENCES triage_sessions(id, patient_id)
);
