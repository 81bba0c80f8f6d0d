//! Writes the SFU's [`RecordedFrame`]s to each room's current segment.
//!
//! The recorder never decides what a frame belongs to beyond its room: which recording a room writes
//! to, and which segment of it, is told by its caller ([`Recorder::start_segment`]), who had it from the
//! store, where the recording was bound to its consultation when the consultation started. A frame of
//! a room without a segment is dropped.
//!
//! Nobody is recorded without their consent: a frame is written only if its sender's consent for
//! its room is on record here ([`Recorder::set_consent`]), and is dropped before it is encrypted
//! otherwise. The default is "not recorded", so a participant whose consent was never passed on is
//! left out rather than recorded by mistake. A decision holds from the moment the recorder takes it:
//! frames it handles afterwards follow it, whether they are in the current segment or a later one.
//! A room's decisions are forgotten when its recording is finished ([`Recorder::finish`]), so the
//! caller states them again when people join.
//!
//! A frame's time is on its room's clock (since the SFU opened the room). A recording has one clock for
//! all its segments, so when a room opens after its recording began (the server restarted), the caller
//! gives the offset that puts the room's clock on the recording's.
//!
//! Segment files are `DIR/<recording id>/<segment index>.seg`. Writing and syncing them blocks, so
//! the writers live on a thread of their own (and each segment's sealed chunks are written and synced
//! on a thread of that segment's, so one room's slow sync holds up neither the others nor the next
//! chunk); a task forwards the SFU's frames to it, with a tick every [`TICK`] that seals buffered
//! frames, so a crash loses at most about a second of a call.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};
use uuid::Uuid;

use super::{ParticipantId, RecordedFrame, RoomId};
use crate::keys::DataKey;
use crate::segment::{SegmentHeader, SegmentWriter, WriteError};

/// How often buffered frames are offered for sealing: well within the segment log's 1 s loss bound.
pub const TICK: Duration = Duration::from_millis(100);
/// Work waiting for the writer thread. When it is full, the SFU's own channel fills next, and the
/// SFU drops frames rather than hold up the call.
const INPUT_CAPACITY: usize = 1024;
/// Frames the forwarding task takes off the SFU's channel at once and hands over together: one
/// wake-up of the writer thread per batch rather than per frame, which under load is most of
/// what handing a frame over costs.
const FORWARD_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("creating the recording's directory {path}: {source}")]
    Directory { path: String, source: io::Error },
    #[error("creating segment {path}: {source}")]
    Create { path: String, source: WriteError },
    #[error("finishing a segment: {0}")]
    Finish(#[source] WriteError),
    #[error("the recorder has stopped")]
    Stopped,
}

/// Where segment `index` of `recording` is kept under `dir`.
pub fn segment_path(dir: &Path, recording: Uuid, index: u32) -> PathBuf {
    dir.join(recording.to_string()).join(format!("{index}.seg"))
}

/// Tells the recorder where each room's frames go. Cloneable.
#[derive(Clone, Debug)]
pub struct Recorder {
    input: mpsc::Sender<Input>,
    dir: PathBuf,
}

enum Input {
    /// In order of arrival.
    Frames(Vec<RecordedFrame>),
    Tick,
    Start {
        room: RoomId,
        header: SegmentHeader,
        key: DataKey,
        offset_us: u64,
        reply: oneshot::Sender<Result<(), RecorderError>>,
    },
    Finish {
        room: RoomId,
        reply: oneshot::Sender<Result<(), RecorderError>>,
    },
    Consent {
        room: RoomId,
        participant: ParticipantId,
        consents: bool,
        reply: oneshot::Sender<()>,
    },
    Shutdown(oneshot::Sender<()>),
}

impl Recorder {
    /// Starts recording `frames` (the SFU driver's channel) under `dir`, on the current Tokio runtime.
    pub fn start(dir: PathBuf, mut frames: mpsc::Receiver<RecordedFrame>) -> io::Result<Recorder> {
        let (input, mut work) = mpsc::channel(INPUT_CAPACITY);
        let writers = Writers {
            dir: dir.clone(),
            rooms: HashMap::new(),
            consent: HashMap::new(),
        };
        std::thread::Builder::new()
            .name("confide-recorder".into())
            .spawn(move || writers.run(&mut work))?;
        let forward = input.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let mut batch = Vec::new();
                let next = tokio::select! {
                    taken = frames.recv_many(&mut batch, FORWARD_BATCH) => match taken {
                        0 => return,
                        _ => Input::Frames(batch),
                    },
                    _ = tick.tick() => Input::Tick,
                };
                if forward.send(next).await.is_err() {
                    return;
                }
            }
        });
        Ok(Recorder { input, dir })
    }

    /// Where this recorder keeps segment `index` of `recording`.
    pub fn segment_path(&self, recording: Uuid, index: u32) -> PathBuf {
        segment_path(&self.dir, recording, index)
    }

    /// From now on, `room`'s frames go to a new segment file for `header`, under `key`, with
    /// `offset_us` added to their times; the room's previous segment, if any, is finished. The file
    /// must not exist: a segment index is used once.
    pub async fn start_segment(
        &self,
        room: RoomId,
        header: SegmentHeader,
        key: DataKey,
        offset_us: u64,
    ) -> Result<(), RecorderError> {
        let (reply, done) = oneshot::channel();
        self.send(Input::Start {
            room,
            header,
            key,
            offset_us,
            reply,
        })
        .await?;
        done.await.map_err(|_| RecorderError::Stopped)?
    }

    /// Finishes `room`'s segment; its frames are dropped until a new one starts.
    pub async fn finish(&self, room: RoomId) -> Result<(), RecorderError> {
        let (reply, done) = oneshot::channel();
        self.send(Input::Finish { room, reply }).await?;
        done.await.map_err(|_| RecorderError::Stopped)?
    }

    /// Records `participant`'s frames in `room` from now on if `consents`, or leaves them out from now
    /// on if not. Until this is called for a participant, their frames are left out. Returns once the
    /// writer thread has taken the decision, so frames it handles afterwards follow it.
    pub async fn set_consent(
        &self,
        room: RoomId,
        participant: ParticipantId,
        consents: bool,
    ) -> Result<(), RecorderError> {
        let (reply, done) = oneshot::channel();
        self.send(Input::Consent {
            room,
            participant,
            consents,
            reply,
        })
        .await?;
        done.await.map_err(|_| RecorderError::Stopped)
    }

    /// Finishes every segment and stops the recorder.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.send(Input::Shutdown(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    async fn send(&self, input: Input) -> Result<(), RecorderError> {
        self.input.send(input).await.map_err(|_| RecorderError::Stopped)
    }
}

/// The writer thread's state: each room's current segment, and who in it may be recorded.
struct Writers {
    dir: PathBuf,
    rooms: HashMap<RoomId, Current>,
    consent: HashMap<RoomId, HashSet<ParticipantId>>,
}

struct Current {
    writer: SegmentWriter<File>,
    offset_us: u64,
}

impl Writers {
    fn run(mut self, work: &mut mpsc::Receiver<Input>) {
        while let Some(input) = work.blocking_recv() {
            match input {
                Input::Frames(frames) => frames.into_iter().for_each(|f| self.push(f)),
                Input::Tick => self.tick(),
                Input::Start {
                    room,
                    header,
                    key,
                    offset_us,
                    reply,
                } => {
                    let _ = reply.send(self.start(room, header, &key, offset_us));
                }
                Input::Finish { room, reply } => {
                    self.consent.remove(&room);
                    let _ = reply.send(self.finish(room));
                }
                Input::Consent {
                    room,
                    participant,
                    consents,
                    reply,
                } => {
                    self.set_consent(room, participant, consents);
                    let _ = reply.send(());
                }
                Input::Shutdown(reply) => {
                    self.finish_all();
                    let _ = reply.send(());
                    return;
                }
            }
        }
        // Every sender is gone: the server stopped without saying so.
        self.finish_all();
    }

    fn push(&mut self, mut recorded: RecordedFrame) {
        let consented = self
            .consent
            .get(&recorded.room)
            .is_some_and(|who| who.contains(&recorded.sender.id));
        if !consented {
            return;
        }
        let Some(current) = self.rooms.get_mut(&recorded.room) else {
            return;
        };
        let frame = &mut recorded.frame;
        frame.timestamp_us = frame.timestamp_us.saturating_add(current.offset_us);
        match current.writer.push(recorded.sender.id, frame) {
            Ok(()) => {}
            // The writer is still sound: only this frame is lost.
            Err(e @ (WriteError::FrameTooLarge { .. } | WriteError::TooManySenders)) => {
                warn!(room = ?recorded.room, error = %e, "recording dropped a frame");
            }
            Err(e) => {
                // A writer that failed takes nothing more (its nonces must not be reused); the room's
                // frames are dropped until its next segment starts.
                error!(room = ?recorded.room, error = %e, "recording segment write failed");
                self.rooms.remove(&recorded.room);
            }
        }
    }

    fn set_consent(&mut self, room: RoomId, participant: ParticipantId, consents: bool) {
        if consents {
            self.consent.entry(room).or_default().insert(participant);
        } else if let Some(who) = self.consent.get_mut(&room) {
            who.remove(&participant);
            if who.is_empty() {
                self.consent.remove(&room);
            }
        }
    }

    fn tick(&mut self) {
        let now = now_ms();
        self.rooms.retain(|room, current| match current.writer.tick(now) {
            Ok(()) => true,
            Err(e) => {
                error!(room = ?room, error = %e, "recording segment write failed");
                false
            }
        });
    }

    fn start(
        &mut self,
        room: RoomId,
        header: SegmentHeader,
        key: &DataKey,
        offset_us: u64,
    ) -> Result<(), RecorderError> {
        if let Err(e) = self.finish(room) {
            warn!(room = ?room, error = %e, "the previous segment did not finish cleanly");
        }
        let path = segment_path(&self.dir, header.recording, header.segment);
        create_dir_durably(path.parent().expect("a segment path has a directory"))?;
        let writer = SegmentWriter::create(&path, key, header).map_err(|source| RecorderError::Create {
            path: path.display().to_string(),
            source,
        })?;
        self.rooms.insert(room, Current { writer, offset_us });
        Ok(())
    }

    fn finish(&mut self, room: RoomId) -> Result<(), RecorderError> {
        match self.rooms.remove(&room) {
            Some(current) => current.writer.finish().map(drop).map_err(RecorderError::Finish),
            None => Ok(()),
        }
    }

    fn finish_all(&mut self) {
        for (room, current) in self.rooms.drain() {
            if let Err(e) = current.writer.finish() {
                error!(room = ?room, error = %e, "finishing a recording segment failed");
            }
        }
    }
}

/// Creates `dir` and its missing parents, each made durable in its own parent, so that a power loss
/// can't drop a segment file by dropping the directory it is in.
fn create_dir_durably(dir: &Path) -> Result<(), RecorderError> {
    let err = |source| RecorderError::Directory {
        path: dir.display().to_string(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(err(e)),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(())
}

/// Wall-clock time for segment headers and seal ticks: real time, whatever clock the caller runs on.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::segment::{Frame, SegmentError, SegmentReader, Track};
    use crate::sfu::{Participant, ParticipantId, Role};

    fn key(seed: u64) -> DataKey {
        DataKey::generate(&mut StdRng::seed_from_u64(seed))
    }

    const PATIENT: ParticipantId = ParticipantId(Uuid::from_u128(1));
    const CLINICIAN: ParticipantId = ParticipantId(Uuid::from_u128(2));

    fn frame(room: RoomId, text: &str) -> RecordedFrame {
        frame_from(PATIENT, room, text)
    }

    fn frame_from(id: ParticipantId, room: RoomId, text: &str) -> RecordedFrame {
        let role = if id == CLINICIAN {
            Role::Clinician
        } else {
            Role::Patient
        };
        RecordedFrame {
            room,
            sender: Participant { id, role },
            frame: Frame {
                track: Track::Audio,
                timestamp_us: 0,
                keyframe: false,
                payload: Bytes::copy_from_slice(text.as_bytes()),
            },
        }
    }

    fn header(recording: Uuid, segment: u32) -> SegmentHeader {
        SegmentHeader {
            recording,
            segment,
            created_at_ms: now_ms(),
        }
    }

    fn payloads(dir: &Path, recording: Uuid, index: u32, key: &DataKey) -> Vec<String> {
        sent(dir, recording, index, key)
            .into_iter()
            .map(|(_, text)| text)
            .collect()
    }

    /// Each frame of a segment: who sent it, and its payload as text.
    fn sent(dir: &Path, recording: Uuid, index: u32, key: &DataKey) -> Vec<(ParticipantId, String)> {
        SegmentReader::open(&segment_path(dir, recording, index), key, recording, index)
            .unwrap()
            .map(|f| {
                let f = f.unwrap();
                (f.sender, String::from_utf8(f.payload.to_vec()).unwrap())
            })
            .collect()
    }

    /// Frames go to their own room's current segment, in order, on the recording's clock, and nowhere
    /// else; a room between segments drops them; an index is never written twice.
    #[tokio::test]
    async fn frames_go_to_their_rooms_current_segment_only() {
        let dir = tempfile::tempdir().unwrap();
        let (frames, rx) = mpsc::channel(16);
        let recorder = Recorder::start(dir.path().join("recordings"), rx).unwrap();
        let (a, b) = (RoomId(Uuid::from_u128(0xA)), RoomId(Uuid::from_u128(0xB)));
        let (rec_a, rec_b) = (Uuid::from_u128(0xA0), Uuid::from_u128(0xB0));
        let (key_a, key_b) = (key(1), key(2));

        for room in [a, b] {
            recorder.set_consent(room, PATIENT, true).await.unwrap();
        }
        frames.send(frame(a, "a-before")).await.unwrap();
        // Frames reach the writer thread through the forwarding task and signaling directly, so
        // their order is only kept across a pause, as the SFU's frames would have had.
        tokio::time::sleep(Duration::from_millis(50)).await;
        recorder
            .start_segment(a, header(rec_a, 0), key(1), 0)
            .await
            .unwrap();
        // B's room opened after its recording began: its frames move onto the recording's clock.
        recorder
            .start_segment(b, header(rec_b, 0), key(2), 5_000_000)
            .await
            .unwrap();
        for text in ["a-0-1", "a-0-2"] {
            frames.send(frame(a, text)).await.unwrap();
        }
        frames.send(frame(b, "b-0-1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        recorder
            .start_segment(a, header(rec_a, 1), key(1), 0)
            .await
            .unwrap();
        frames.send(frame(a, "a-1-1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        recorder.finish(a).await.unwrap();
        frames.send(frame(a, "a-after")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        let reused = recorder.start_segment(a, header(rec_a, 1), key(1), 0).await;
        assert!(matches!(reused, Err(RecorderError::Create { .. })), "{reused:?}");
        recorder.shutdown().await;

        let root = dir.path().join("recordings");
        assert_eq!(payloads(&root, rec_a, 0, &key_a), ["a-0-1", "a-0-2"]);
        assert_eq!(payloads(&root, rec_a, 1, &key_a), ["a-1-1"]);
        assert_eq!(
            payloads(&root, rec_b, 0, &key_b),
            ["b-0-1"],
            "finished at shutdown"
        );
        let b_frame = SegmentReader::open(&segment_path(&root, rec_b, 0), &key_b, rec_b, 0)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(b_frame.timestamp_us, 5_000_000);
        assert!(matches!(
            SegmentReader::open(&segment_path(&root, rec_b, 0), &key_a, rec_b, 0),
            Err(SegmentError::WrongKey)
        ));
        assert!(matches!(
            recorder.start_segment(b, header(rec_b, 1), key(2), 0).await,
            Err(RecorderError::Stopped)
        ));
    }

    /// Without a finish, the ticks still seal what was pushed: a crash loses at most about a second.
    #[tokio::test]
    async fn ticks_seal_frames_of_an_unfinished_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (frames, rx) = mpsc::channel(16);
        let recorder = Recorder::start(dir.path().to_owned(), rx).unwrap();
        let room = RoomId(Uuid::from_u128(7));
        let recording = Uuid::from_u128(70);
        recorder.set_consent(room, PATIENT, true).await.unwrap();
        recorder
            .start_segment(room, header(recording, 0), key(3), 0)
            .await
            .unwrap();
        frames.send(frame(room, "sealed")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let read: Vec<_> =
            SegmentReader::open(&segment_path(dir.path(), recording, 0), &key(3), recording, 0)
                .unwrap()
                .collect();
        assert_eq!(read.len(), 2, "{read:?}");
        assert_eq!(read[0].as_ref().unwrap().payload, "sealed".as_bytes());
        assert!(matches!(
            read[1],
            Err(SegmentError::Truncated { intact_chunks: 1 })
        ));
        recorder.shutdown().await;
    }

    /// Only frames of participants whose consent is on record are written, from the moment it is
    /// given until the moment it is withdrawn; a finished recording forgets every decision.
    #[tokio::test]
    async fn only_consenting_participants_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (frames, rx) = mpsc::channel(16);
        let recorder = Recorder::start(dir.path().to_owned(), rx).unwrap();
        let room = RoomId(Uuid::from_u128(9));
        let other_room = RoomId(Uuid::from_u128(10));
        let recording = Uuid::from_u128(90);
        recorder
            .start_segment(room, header(recording, 0), key(4), 0)
            .await
            .unwrap();
        // Consent is per room: the patient's consent elsewhere does not carry over.
        recorder.set_consent(other_room, PATIENT, true).await.unwrap();
        let send = |who, text: &'static str| {
            let frames = frames.clone();
            async move {
                frames.send(frame_from(who, room, text)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        };
        send(PATIENT, "p-unasked").await;
        send(CLINICIAN, "c-unasked").await;
        recorder.set_consent(room, PATIENT, true).await.unwrap();
        send(PATIENT, "p-1").await;
        send(CLINICIAN, "c-still-unasked").await;
        recorder.set_consent(room, CLINICIAN, true).await.unwrap();
        send(CLINICIAN, "c-1").await;
        recorder.set_consent(room, PATIENT, false).await.unwrap();
        send(PATIENT, "p-withdrawn").await;
        send(CLINICIAN, "c-2").await;
        // A switch starts a new segment: the decisions stay.
        recorder
            .start_segment(room, header(recording, 1), key(4), 0)
            .await
            .unwrap();
        send(PATIENT, "p-still-withdrawn").await;
        recorder.set_consent(room, PATIENT, true).await.unwrap();
        send(PATIENT, "p-2").await;
        send(CLINICIAN, "c-3").await;
        recorder.finish(room).await.unwrap();
        recorder
            .start_segment(room, header(recording, 2), key(4), 0)
            .await
            .unwrap();
        send(PATIENT, "p-forgotten").await;
        send(CLINICIAN, "c-forgotten").await;
        recorder.shutdown().await;

        assert_eq!(
            sent(dir.path(), recording, 0, &key(4)),
            [
                (PATIENT, "p-1".to_owned()),
                (CLINICIAN, "c-1".to_owned()),
                (CLINICIAN, "c-2".to_owned()),
            ]
        );
        assert_eq!(
            sent(dir.path(), recording, 1, &key(4)),
            [(PATIENT, "p-2".to_owned()), (CLINICIAN, "c-3".to_owned())]
        );
        assert_eq!(sent(dir.path(), recording, 2, &key(4)), []);
        assert!(matches!(
            recorder.set_consent(room, PATIENT, true).await,
            Err(RecorderError::Stopped)
        ));
    }
}
