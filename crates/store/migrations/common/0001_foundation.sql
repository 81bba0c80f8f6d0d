-- Accounts, practices, registrations, clinical notes, sessions, one-time tokens and the audit chain.
-- Ids are UUID text and times are milliseconds since the Unix epoch, the same on SQLite and PostgreSQL.

CREATE TABLE practices (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    address     TEXT NOT NULL,
    time_zone   TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('patient', 'clinician', 'practice_admin', 'platform_admin')),
    practice_id   TEXT REFERENCES practices(id),
    password_hash TEXT,
    totp_secret   TEXT,
    totp_enabled  BIGINT NOT NULL DEFAULT 0,
    -- The last TOTP time step accepted, so that a code cannot be used twice.
    totp_last_step BIGINT,
    disabled_at   BIGINT,
    created_at    BIGINT NOT NULL,
    CHECK ((role IN ('clinician', 'practice_admin')) = (practice_id IS NOT NULL))
);

CREATE TABLE patients (
    user_id       TEXT PRIMARY KEY REFERENCES users(id),
    date_of_birth TEXT NOT NULL
);

CREATE TABLE registrations (
    id           TEXT PRIMARY KEY,
    patient_id   TEXT NOT NULL REFERENCES users(id),
    practice_id  TEXT NOT NULL REFERENCES practices(id),
    status       TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'declined', 'withdrawn', 'ended')),
    requested_at BIGINT NOT NULL,
    decided_at   BIGINT,
    decided_by   TEXT REFERENCES users(id)
);
-- A patient is registered with at most one practice, and asks each practice at most once at a time.
CREATE UNIQUE INDEX registrations_one_accepted ON registrations(patient_id) WHERE status = 'accepted';
CREATE UNIQUE INDEX registrations_one_live_per_practice ON registrations(patient_id, practice_id)
    WHERE status IN ('pending', 'accepted');
CREATE INDEX registrations_by_practice ON registrations(practice_id, status);

CREATE TABLE clinical_notes (
    id         TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES users(id),
    author_id  TEXT NOT NULL REFERENCES users(id),
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX clinical_notes_by_patient ON clinical_notes(patient_id, created_at);

CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    mfa_verified BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users(id),
    code_hash TEXT NOT NULL,
    used_at   BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE one_time_tokens (
    token_hash  TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL CHECK (purpose IN ('password_reset', 'staff_invite')),
    user_id     TEXT REFERENCES users(id),
    email       TEXT,
    name        TEXT,
    role        TEXT,
    practice_id TEXT REFERENCES practices(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE audit_log (
    seq             BIGINT PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    actor_id        TEXT,
    actor_role      TEXT,
    action          TEXT NOT NULL,
    resource        TEXT NOT NULL,
    subject_patient TEXT,
    outcome         TEXT NOT NULL,
    reason          TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX audit_log_by_subject ON audit_log(subject_patient, seq);

-- The chain's last (seq, hash), kept apart so that entries cut from the end are noticed.
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
