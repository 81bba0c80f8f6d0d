-- Guests are patient data, like the consultation they were invited to: seen only in a grant's patient or
-- practice scope, or by the gate's lookup of a link or a guest session before any grant exists. A guest
-- is never removed: revoking one, or spending their link, only stamps the row.
GRANT SELECT, INSERT, UPDATE ON consultation_guests TO confide_app;
ALTER TABLE consultation_guests ENABLE ROW LEVEL SECURITY;
CREATE POLICY consultation_guests_in_scope ON consultation_guests
    USING (
        patient_id = current_setting('confide.patient', true)
        OR practice_id = current_setting('confide.practice', true)
    );
CREATE POLICY consultation_guests_gate_facts ON consultation_guests FOR SELECT
    USING (current_setting('confide.gate_facts', true) = 'on');

-- A guest session holds no patient data, only which guest it is, as `sessions` does for accounts.
GRANT SELECT, INSERT, DELETE ON guest_sessions TO confide_app;

-- 0014 rebuilt the consent and message tables; they keep the grants and policies of 0011.
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
