-- Consultations and recordings are patient data: visible only in a grant's patient or practice scope.
GRANT SELECT, INSERT, UPDATE ON consultations, recordings, recording_segments TO confide_app;

ALTER TABLE consultations ENABLE ROW LEVEL SECURITY;
CREATE POLICY consultations_in_scope ON consultations
    USING (
        patient_id = current_setting('confide.patient', true)
        OR practice_id = current_setting('confide.practice', true)
    );

ALTER TABLE recordings ENABLE ROW LEVEL SECURITY;
CREATE POLICY recordings_in_scope ON recordings
    USING (
        patient_id = current_setting('confide.patient', true)
        OR practice_id = current_setting('confide.practice', true)
    );

ALTER TABLE recording_segments ENABLE ROW LEVEL SECURITY;
CREATE POLICY recording_segments_in_scope ON recording_segments
    USING (EXISTS (SELECT 1 FROM recordings r WHERE r.id = recording_segments.recording_id));
