-- Break-glass grants name a patient and why their recording was opened: patient data, seen only in the
-- scope of a grant for that patient or practice. The remux queue holds ids only, like `jobs`.
GRANT SELECT, INSERT, UPDATE ON recording_break_glass, recording_jobs TO confide_app;

ALTER TABLE recording_break_glass ENABLE ROW LEVEL SECURITY;
CREATE POLICY recording_break_glass_in_scope ON recording_break_glass
    USING (
        patient_id = current_setting('confide.patient', true)
        OR practice_id = current_setting('confide.practice', true)
    );

-- The gate's lookup of whose a recording is, and whether the one asking holds an open break-glass grant
-- on it, before any grant exists: read only.
CREATE POLICY recordings_gate_facts ON recordings FOR SELECT
    USING (current_setting('confide.gate_facts', true) = 'on');
CREATE POLICY recording_break_glass_gate_facts ON recording_break_glass FOR SELECT
    USING (current_setting('confide.gate_facts', true) = 'on');
