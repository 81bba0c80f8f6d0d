-- A patient's notes are read in (created_at, id) order; with id in the index, the index gives that order
-- and no read has to sort.
CREATE INDEX clinical_notes_in_order ON clinical_notes(patient_id, created_at, id);
DROP INDEX clinical_notes_by_patient;
