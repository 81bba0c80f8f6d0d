-- A browser plays only the first audio track of a file, so the playback page plays one copy per
-- participant side by side. The recording's own copy (`recordings.playback_object`) keeps everyone's
-- tracks, for export and desktop players. Written with it, in the transaction that finishes the remux.
CREATE TABLE recording_copies (
    recording_id   TEXT NOT NULL REFERENCES recordings(id),
    -- Who took part: the id the call gave them, a user's id.
    participant_id TEXT NOT NULL,
    object         TEXT NOT NULL,
    len            BIGINT NOT NULL,
    duration_ms    BIGINT NOT NULL,
    -- Where the copy's 0 is, in ms after the start of the recording's own copy: how the copies line up.
    offset_ms      BIGINT NOT NULL,
    PRIMARY KEY (recording_id, participant_id)
);
