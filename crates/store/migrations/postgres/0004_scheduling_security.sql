-- Appointments are patient data: the server sees one only in the scope of a grant for its patient or
-- practice. The gate's own lookup of who an appointment belongs to (before any grant exists) reads
-- with confide.gate_facts set, and may only SELECT.
GRANT SELECT, INSERT, UPDATE, DELETE ON availability_rules, availability_exceptions, appointments,
    appointment_units, jobs TO confide_app;

ALTER TABLE appointments ENABLE ROW LEVEL SECURITY;
CREATE POLICY appointments_in_scope ON appointments
    USING (
        patient_id = current_setting('confide.patient', true)
        OR practice_id = current_setting('confide.practice', true)
    );
CREATE POLICY appointments_gate_facts ON appointments FOR SELECT
    USING (current_setting('confide.gate_facts', true) = 'on');
