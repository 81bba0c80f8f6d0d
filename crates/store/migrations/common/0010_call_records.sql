-- What a consultation keeps beside its media: each participant's recording-consent decisions and the
-- call's chat. Both are append-only and bound at creation to their consultation's patient, clinician and
-- practice through composite foreign keys, as recordings are (0005); the one who decided or wrote must be
-- that patient or that clinician.

CREATE UNIQUE INDEX consultations_owners ON consultations(id, patient_id, clinician_id, practice_id);

CREATE TABLE consultation_consents (
    consultation_id TEXT NOT NULL,
    patient_id      TEXT NOT NULL,
    clinician_id    TEXT NOT NULL,
    practice_id     TEXT NOT NULL,
    -- Position in the consultation's consent log, from 1; decided inside the writing transaction.
    seq             BIGINT NOT NULL CHECK (seq >= 1),
    participant_id  TEXT NOT NULL,
    decision        TEXT NOT NULL CHECK (decision IN ('given', 'withdrawn')),
    decided_at      BIGINT NOT NULL,
    PRIMARY KEY (consultation_id, seq),
    FOREIGN KEY (consultation_id, patient_id, clinician_id, practice_id)
        REFERENCES consultations(id, patient_id, clinician_id, practice_id),
    CHECK (participant_id = patient_id OR participant_id = clinician_id)
);

CREATE TABLE consultation_messages (
    consultation_id TEXT NOT NULL,
    patient_id      TEXT NOT NULL,
    clinician_id    TEXT NOT NULL,
    practice_id     TEXT NOT NULL,
    seq             BIGINT NOT NULL CHECK (seq >= 1),
    sender_id       TEXT NOT NULL,
    body            TEXT NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
    sent_at         BIGINT NOT NULL,
    PRIMARY KEY (consultation_id, seq),
    FOREIGN KEY (consultation_id, patient_id, clinician_id, practice_id)
        REFERENCES consultations(id, patient_id, clinician_id, practice_id),
    CHECK (sender_id = patient_id OR sender_id = clinician_id)
);
