-- Scheduling: clinicians' availability, appointments, the time they hold, and the job queue that sends
-- booking emails and reminders.

-- How long before an appointment a patient may still cancel or move it.
ALTER TABLE practices ADD COLUMN booking_cutoff_minutes BIGINT NOT NULL DEFAULT 120;

-- Weekly sessions in the practice's local time: minutes after midnight, dates as YYYY-MM-DD.
CREATE TABLE availability_rules (
    id           TEXT PRIMARY KEY,
    clinician_id TEXT NOT NULL REFERENCES users(id),
    weekday      BIGINT NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    start_minute BIGINT NOT NULL CHECK (start_minute BETWEEN 0 AND 1440 AND start_minute % 5 = 0),
    end_minute   BIGINT NOT NULL CHECK (end_minute BETWEEN 0 AND 1440 AND end_minute % 5 = 0),
    slot_minutes BIGINT NOT NULL CHECK (slot_minutes IN (10, 15, 20, 30)),
    kinds        TEXT NOT NULL CHECK (kinds IN ('video', 'audio', 'either')),
    valid_from   TEXT NOT NULL,
    valid_until  TEXT,
    created_at   BIGINT NOT NULL,
    CHECK (end_minute > start_minute)
);
CREATE INDEX availability_rules_by_clinician ON availability_rules(clinician_id);

CREATE TABLE availability_exceptions (
    id           TEXT PRIMARY KEY,
    clinician_id TEXT NOT NULL REFERENCES users(id),
    on_date      TEXT NOT NULL,
    start_minute BIGINT NOT NULL CHECK (start_minute BETWEEN 0 AND 1440 AND start_minute % 5 = 0),
    end_minute   BIGINT NOT NULL CHECK (end_minute BETWEEN 0 AND 1440 AND end_minute % 5 = 0),
    kind         TEXT NOT NULL CHECK (kind IN ('blocked', 'extra')),
    slot_minutes BIGINT CHECK (slot_minutes IN (10, 15, 20, 30)),
    kinds        TEXT CHECK (kinds IN ('video', 'audio', 'either')),
    note         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    CHECK (end_minute > start_minute),
    CHECK ((kind = 'extra') = (slot_minutes IS NOT NULL AND kinds IS NOT NULL))
);
CREATE INDEX availability_exceptions_by_clinician ON availability_exceptions(clinician_id, on_date);

-- Patient, clinician and practice are fixed when the appointment is booked; nothing changes them later.
CREATE TABLE appointments (
    id             TEXT PRIMARY KEY,
    practice_id    TEXT NOT NULL REFERENCES practices(id),
    clinician_id   TEXT NOT NULL REFERENCES users(id),
    patient_id     TEXT NOT NULL REFERENCES users(id),
    starts_at      BIGINT NOT NULL,
    ends_at        BIGINT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('video', 'audio')),
    reason         TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('booked', 'checked_in', 'in_consultation', 'completed',
                                                   'cancelled', 'no_show')),
    -- The iCalendar SEQUENCE: raised by every change the patient's calendar must follow.
    sequence       BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    checked_in_at  BIGINT,
    started_at     BIGINT,
    finished_at    BIGINT,
    cancelled_by   TEXT REFERENCES users(id),
    cancel_message TEXT,
    CHECK (ends_at > starts_at),
    UNIQUE (id, clinician_id)
);
CREATE INDEX appointments_by_patient ON appointments(patient_id, starts_at);
CREATE INDEX appointments_by_clinician ON appointments(clinician_id, starts_at);

-- No double booking, enforced by the database: every appointment that holds its time claims each of
-- its clinician's five-minute units, and a unit can be claimed once. Two overlapping appointments
-- cannot both commit, whatever the code above does.
CREATE TABLE appointment_units (
    clinician_id   TEXT NOT NULL,
    unit_start     BIGINT NOT NULL CHECK (unit_start % 300000 = 0),
    appointment_id TEXT NOT NULL,
    PRIMARY KEY (clinician_id, unit_start),
    FOREIGN KEY (appointment_id, clinician_id) REFERENCES appointments(id, clinician_id)
);
CREATE INDEX appointment_units_by_appointment ON appointment_units(appointment_id);

-- Work to do at a time: emails about appointments. A job is marked done in the same database that
-- holds it, so a restart neither loses nor repeats one.
CREATE TABLE jobs (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('booked', 'rescheduled', 'cancelled', 'reminder_24h',
                                                 'reminder_1h')),
    appointment_id TEXT NOT NULL REFERENCES appointments(id),
    patient_id     TEXT NOT NULL REFERENCES users(id),
    run_at         BIGINT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'done', 'cancelled', 'failed')),
    attempts       BIGINT NOT NULL DEFAULT 0,
    last_error     TEXT,
    -- A runner that takes the job holds it until then, so two runners never send it both.
    lease_until    BIGINT,
    created_at     BIGINT NOT NULL,
    finished_at    BIGINT
);
CREATE INDEX jobs_due ON jobs(state, run_at);
CREATE INDEX jobs_by_appointment ON jobs(appointment_id, state);
