-- Conversations with the symptom checker are seen only in the scope of a grant for their own patient;
-- a summary shared with an appointment also in the scope of the appointment's practice (the store reads
-- it only for a grant to the appointment's own clinician). The gate's lookup of whose they are reads with
-- confide.gate_facts set, and may only SELECT. Shared summaries are never changed.
GRANT SELECT, INSERT, UPDATE ON triage_sessions TO confide_app;
GRANT SELECT, INSERT ON appointment_triage TO confide_app;

ALTER TABLE triage_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY triage_sessions_in_scope ON triage_sessions
    USING (patient_id = current_setting('confide.patient', true));
CREATE POLICY triage_sessions_gate_facts ON triage_sessions FOR SELECT
    USING (current_setting('confide.gate_facts', true) = 'on');

ALTER TABLE appointment_triage ENABLE ROW LEVEL SECURITY;
CREATE POLICY appointment_triage_in_scope ON appointment_triage
    USING (
        patient_id = current_setting('confide.patient', true)
        OR practice_id = current_setting('confide.practice', true)
    );
CREATE POLICY appointment_triage_gate_facts ON appointment_triage FOR SELECT
    USING (current_setting('confide.gate_facts', true) = 'on');
