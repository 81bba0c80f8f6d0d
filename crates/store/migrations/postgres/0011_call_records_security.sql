-- Consent decisions and chat messages are patient data, seen only in the scope of a grant for their
-- patient or practice. The server may add to them but never change or remove them.
GRANT SELECT, INSERT ON consultation_consents, consultation_messages TO confide_app;

ALTER TABLE consultation_consents ENABLE ROW LEVEL SECURITY;
CREATE POLICY consultation_consents_in_scope ON consultation_consents
    USING (
        patient_id = current_setting('confide.patient', true)
        OR practice_id = current_setting('confide.practice', true)
    );

ALTER TABLE consultation_messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY consultation_messages_in_scope ON consultation_messages
    USING (
        patient_id = current_setting('confide.patient', true)
        OR practice_id = current_setting('confide.practice', true)
    );
