-- The gate's own lookup of whose a consultation is, before any grant exists, reads with
-- confide.gate_facts set, as for appointments, and may only SELECT.
CREATE POLICY consultations_gate_facts ON consultations FOR SELECT
    USING (current_setting('confide.gate_facts', true) = 'on');
