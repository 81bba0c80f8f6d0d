-- Guests: someone without an account, such as an interpreter, whom a consultation's clinician invites into
-- that one call. A guest is bound when invited to the consultation and its owners, as everything else of
-- it is; their link's token is kept only as its SHA-256 hash, and is spent by its first use.
CREATE TABLE consultation_guests (
    id              TEXT PRIMARY KEY,
    consultation_id TEXT NOT NULL,
    patient_id      TEXT NOT NULL,
    clinician_id    TEXT NOT NULL,
    practice_id     TEXT NOT NULL,
    name            TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role            TEXT NOT NULL CHECK (length(role) BETWEEN 1 AND 50),
    token_hash      TEXT NOT NULL UNIQUE,
    invited_at      BIGINT NOT NULL,
    link_expires_at BIGINT NOT NULL,
    redeemed_at     BIGINT,
    revoked_at      BIGINT,
    FOREIGN KEY (consultation_id, patient_id, clinician_id, practice_id)
        REFERENCES consultations(id, patient_id, clinician_id, practice_id)
);
CREATE INDEX consultation_guests_by_consultation ON consultation_guests(consultation_id);
CREATE UNIQUE INDEX consultation_guests_owners
    ON consultation_guests(id, consultation_id, patient_id, clinician_id, practice_id);

-- The browser that redeemed a guest's link: one session per guest, so a link can't be shared after use.
CREATE TABLE guest_sessions (
    token_hash TEXT PRIMARY KEY,
    guest_id   TEXT NOT NULL UNIQUE REFERENCES consultation_guests(id),
    expires_at BIGINT NOT NULL
);

-- A guest decides about their own recording and chats like the others, so consent decisions and messages
-- may now be a guest's too: `guest_id` names them, bound to the same consultation and owners, and the
-- participant or sender must be that guest. The tables are rebuilt because a CHECK can't be changed in
-- place on SQLite; the rows are copied unchanged.
CREATE TABLE consultation_consents_v2 (
    consultation_id TEXT NOT NULL,
    patient_id      TEXT NOT NULL,
    clinician_id    TEXT NOT NULL,
    practice_id     TEXT NOT NULL,
    seq             BIGINT NOT NULL CHECK (seq >= 1),
    participant_id  TEXT NOT NULL,
    guest_id        TEXT,
    decision        TEXT NOT NULL CHECK (decision IN ('given', 'withdrawn')),
    decided_at      BIGINT NOT NULL,
    PRIMARY KEY (consultation_id, seq),
    FOREIGN KEY (consultation_id, patient_id, clinician_id, practice_id)
        REFERENCES consultations(id, patient_id, clinician_id, practice_id),
    FOREIGN KEY (guest_id, consultation_id, patient_id, clinician_id, practice_id)
        REFERENCES consultation_guests(id, consultation_id, patient_id, clinician_id, practice_id),
    CHECK ((guest_id IS NULL AND (participant_id = patient_id OR participant_id = clinician_id))
        OR participant_id = guest_id)
);
INSERT INTO consultation_consents_v2 (consultation_id, patient_id, clinician_id, practice_id, seq,
    participant_id, decision, decided_at)
    SELECT consultation_id, patient_id, clinician_id, practice_id, seq, participant_id, decision, decided_at
    FROM consultation_consents;
DROP TABLE consultation_consents;
ALTER TABLE consultation_consents_v2 RENAME TO consultation_consents;

CREATE TABLE consultation_messages_v2 (
    consultation_id TEXT NOT NULL,
    patient_id      TEXT NOT NULL,
    clinician_id    TEXT NOT NULL,
    practice_id     TEXT NOT NULL,
    seq             BIGINT NOT NULL CHECK (seq >= 1),
    sender_id       TEXT NOT NULL,
    guest_id        TEXT,
    body            TEXT NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
    sent_at         BIGINT NOT NULL,
    PRIMARY KEY (consultation_id, seq),
    FOREIGN KEY (consultation_id, patient_id, clinician_id, practice_id)
        REFERENCES consultations(id, patient_id, clinician_id, practice_id),
    FOREIGN KEY (guest_id, consultation_id, patient_id, clinician_id, practice_id)
        REFERENCES consultation_guests(id, consultation_id, patient_id, clinician_id, practice_id),
    CHECK ((guest_id IS NULL AND (sender_id = patient_id OR sender_id = clinician_id))
        OR sender_id = guest_id)
);
INSERT INTO consultation_messages_v2 (consultation_id, patient_id, clinician_id, practice_id, seq,
    sender_id, body, sent_at)
    SELECT consultation_id, patient_id, clinician_id, practice_id, seq, sender_id, body, sent_at
    FROM consultation_messages;
DROP TABLE consultation_messages;
ALTER TABLE consultation_messages_v2 RENAME TO consultation_messages;
