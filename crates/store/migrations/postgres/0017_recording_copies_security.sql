-- A participant's playback copy is patient data like its recording: visible in the recording's scope only.
-- Retention deletes the rows once the objects are gone.
GRANT SELECT, INSERT, UPDATE, DELETE ON recording_copies TO confide_app;

ALTER TABLE recording_copies ENABLE ROW LEVEL SECURITY;
CREATE POLICY recording_copies_in_scope ON recording_copies
    USING (EXISTS (SELECT 1 FROM recordings r WHERE r.id = recording_copies.recording_id));
