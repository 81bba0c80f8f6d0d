-- The server works as confide_app, which owns no table, so row-level security applies to it. Each
-- transaction that touches patient data first sets confide.patient or confide.practice from the grant the
-- access gate issued; without them, the patient tables show no rows.
DO $$
BEGIN
    CREATE ROLE confide_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO confide_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON practices, users, patients, registrations, clinical_notes, sessions,
    recovery_codes, one_time_tokens, audit_head TO confide_app;
-- The audit log is append-only for the server: no UPDATE, no DELETE.
GRANT SELECT, INSERT ON audit_log TO confide_app;

ALTER TABLE patients ENABLE ROW LEVEL SECURITY;
CREATE POLICY patients_in_scope ON patients
    USING (
        user_id = current_setting('confide.patient', true)
        OR EXISTS (
            SELECT 1 FROM registrations r
            WHERE r.patient_id = patients.user_id
              AND r.status IN ('pending', 'accepted')
              AND r.practice_id = current_setting('confide.practice', true)
        )
    );

ALTER TABLE clinical_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY clinical_notes_in_scope ON clinical_notes
    USING (patient_id = current_setting('confide.patient', true));

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_log_read_own ON audit_log FOR SELECT
    USING (subject_patient = current_setting('confide.patient', true));
CREATE POLICY audit_log_append ON audit_log FOR INSERT WITH CHECK (true);
