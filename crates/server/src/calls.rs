//! Calls: the server's side of a consultation's video call. Signaling goes through here to the SFU, and
//! here the recorder is told which recording and segment a room's frames go to.
//!
//! Everything a call does is for a grant to join the consultation, so for its own patient or clinician,
//! or for a guest its clinician invited; the room is the consultation, the participant is the user (or
//! the guest) and their role is what they are in the consultation's binding. The recording and the
//! segment index come from the store, where the recording was bound to the consultation when it
//! started; nothing a browser sends names either.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use confide_domain::RecordingId;
use confide_domain::Timestamp;
use confide_domain::consultation::{ConsentDecision, ConsultationMode, SegmentReason};
use confide_domain::ids::ConsultationId;
use confide_domain::policy::actions::{JoinConsultation, RecordConsent};
use confide_domain::policy::{Actor, ConsultationGrant};
use confide_domain::scheduling::AppointmentStatus;
use confide_media::sfu::driver::{DriverError, SfuHandle};
use confide_media::sfu::recorder::{Recorder, RecorderError, now_ms};
use confide_media::sfu::{Participant, ParticipantId, Role, RoomId, SfuError};
use confide_media::{DataKey, KeyError, MasterKey, SegmentHeader, SegmentReader, WrappedKey};
use confide_store::{CallFacts, ConsentEntry, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the consultation is not running: the appointment is {0}")]
    NotRunning(AppointmentStatus),
    #[error("join the call first")]
    NotInCall,
    #[error("the consultation's call has ended")]
    Ended,
    #[error("the offer is not a usable WebRTC offer")]
    BadOffer(#[source] SfuError),
    #[error("the call is full")]
    Full,
    #[error("the guest's invitation was revoked")]
    GuestRevoked,
    #[error("the SFU: {0}")]
    Sfu(#[source] DriverError),
    #[error("the recorder: {0}")]
    Recorder(#[from] RecorderError),
    #[error("the recording's key: {0}")]
    Key(#[from] KeyError),
    #[error("the recording's stored key is not hex")]
    KeyEncoding,
}

impl From<DriverError> for CallError {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::Sfu(e @ (SfuError::BadOffer(_) | SfuError::Negotiation(_))) => {
                CallError::BadOffer(e)
            }
            DriverError::Sfu(SfuError::RoomFull(_)) => CallError::Full,
            DriverError::Sfu(SfuError::UnknownParticipant(..) | SfuError::UnknownRoom(_)) => {
                CallError::NotInCall
            }
            other => CallError::Sfu(other),
        }
    }
}

/// The SFU, the recorder and what the server knows of each open room.
#[derive(Clone)]
pub struct Calls {
    inner: Arc<Inner>,
}

struct Inner {
    sfu: SfuHandle,
    recorder: Recorder,
    master: MasterKey,
    /// One lock per consultation, so that one call's signaling steps happen one at a time.
    rooms: Mutex<HashMap<ConsultationId, Arc<tokio::sync::Mutex<Room>>>>,
    /// Told when a call has ended and its segments are finished, so its recording is remuxed at once.
    ended: tokio::sync::Notify,
}

/// A room as this process knows it.
#[derive(Default)]
struct Room {
    open: bool,
    /// Set when the consultation's call ended; a step that was waiting for the lock then refuses.
    closed: bool,
    /// Everyone who joined since the room opened: joining again is a reconnect.
    joined: HashSet<ParticipantId>,
    /// Who is in the call now (the SFU also drops connections that fail).
    present: HashSet<ParticipantId>,
    /// The mode of the segment the recorder has open for the room, if it has one.
    recording: Option<ConsultationMode>,
    /// Whether this process has started a segment for the room, so a room that empties and fills
    /// again continues with a reconnect rather than a restart.
    recorded_here: bool,
    /// When the SFU opened the room, on the wall clock: the room's frames are timed from then.
    opened_at_ms: u64,
    /// Added to the room's frame times to put them on the recording's clock (see `clock_offset_us`).
    clock_offset_us: u64,
}

/// What a join or a renegotiation answers.
pub struct Answer {
    pub sdp: String,
}

impl Calls {
    pub fn new(sfu: SfuHandle, recorder: Recorder, master: MasterKey) -> Calls {
        Calls {
            inner: Arc::new(Inner {
                sfu,
                recorder,
                master,
                rooms: Mutex::new(HashMap::new()),
                ended: tokio::sync::Notify::new(),
            }),
        }
    }

    pub fn sfu(&self) -> &SfuHandle {
        &self.inner.sfu
    }

    /// Notified each time a call ends with its segments finished.
    pub fn ended(&self) -> &tokio::sync::Notify {
        &self.inner.ended
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<ConsultationId, Arc<tokio::sync::Mutex<Room>>>> {
        self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The room's lock; with `create`, a room is made for a consultation that has none yet.
    fn room(&self, consultation: ConsultationId, create: bool) -> Option<Arc<tokio::sync::Mutex<Room>>> {
        let mut rooms = self.rooms();
        if create {
            Some(rooms.entry(consultation).or_default().clone())
        } else {
            rooms.get(&consultation).cloned()
        }
    }

    /// Joins the grant's principal to the consultation's call with their browser's offer. A second join
    /// by the same person replaces their connection (a reconnect) and starts a new segment.
    pub async fn join(
        &self,
        store: &Store,
        grant: &impl ConsultationGrant<JoinConsultation>,
        offer: String,
        mode: ConsultationMode,
        at_ms: i64,
    ) -> Result<Answer, CallError> {
        let (room_id, who) = ids(grant);
        let user = who.id;
        let facts = running(store, grant).await?;
        let lock = self
            .room(grant.consultation().id, true)
            .expect("created when missing");
        let mut room = lock.lock().await;
        if room.closed {
            return Err(CallError::Ended);
        }
        // A revocation clears the room under this lock after storing itself, so a guest still admitted
        // here is one it has not cleared yet, and will.
        if let Actor::Guest(guest) = grant.actor()
            && !store.guest_still_admitted(grant, guest).await?
        {
            return Err(CallError::GuestRevoked);
        }
        let sfu = &self.inner.sfu;
        if !room.open {
            match sfu.open_room(room_id).await {
                Ok(()) | Err(DriverError::Sfu(SfuError::RoomExists(_))) => {}
                Err(e) => return Err(e.into()),
            }
            room.open = true;
            room.opened_at_ms = now_ms();
        }
        let sdp = match sfu.join(room_id, who, offer).await {
            Ok(sdp) => sdp,
            Err(e) => {
                if room.present.is_empty() {
                    sfu.close_room(room_id).await?;
                    room.open = false;
                }
                return Err(e.into());
            }
        };
        let reconnect = !room.joined.insert(user);
        room.present.insert(user);
        // The recorder forgets a room's consent when its segment finishes (the room emptied, or the
        // server restarted), so each join tells it again what the store holds.
        if let Err(e) = self.apply_consents(store, grant, room_id).await {
            sfu.leave(room_id, who.id).await?;
            room.present.remove(&user);
            return Err(e);
        }
        if !reconnect && room.recording.is_some() {
            return Ok(Answer { sdp });
        }
        let first = &facts.segments[0];
        let first_unused = facts.segments.len() == 1
            && !room.recorded_here
            && !self
                .inner
                .recorder
                .segment_path(facts.recording.as_uuid(), first.index)
                .exists();
        let started = if first_unused && !reconnect {
            self.record(store, grant, &facts, first.index, first.mode, &mut room)
                .await
        } else {
            // A rejoin, or a room that emptied, carries on; a room this process never recorded had
            // its earlier segments written before a restart.
            let reason = if reconnect || room.recorded_here {
                SegmentReason::Reconnect
            } else {
                SegmentReason::Restart
            };
            match store.add_segment(grant, reason, mode, at_ms).await {
                Ok(index) => self.record(store, grant, &facts, index, mode, &mut room).await,
                Err(e) => Err(e.into()),
            }
        };
        if let Err(e) = started {
            sfu.leave(room_id, who.id).await?;
            room.present.remove(&user);
            return Err(e);
        }
        Ok(Answer { sdp })
    }

    /// Tells the recorder each participant's consent as it stands in the store; nobody whose consent
    /// is not on record as given is recorded.
    async fn apply_consents(
        &self,
        store: &Store,
        grant: &impl ConsultationGrant<JoinConsultation>,
        room_id: RoomId,
    ) -> Result<(), CallError> {
        let mut current: HashMap<Actor, ConsentDecision> = HashMap::new();
        for entry in store.consent_log(grant).await? {
            current.insert(entry.participant, entry.decision);
        }
        for (actor, decision) in current {
            self.inner
                .recorder
                .set_consent(
                    room_id,
                    ParticipantId(actor.as_uuid()),
                    decision == ConsentDecision::Given,
                )
                .await?;
        }
        Ok(())
    }

    /// Stores the grant's principal's consent decision and tells the recorder, under the room's lock so
    /// that a join in between can't pass on the decision before. A withdrawal reaches the recorder
    /// before the store, so that no frame is recorded after it even if storing it fails; consent given
    /// reaches the recorder only once it is stored. Returns the entry when the decision changed.
    pub async fn record_consent(
        &self,
        store: &Store,
        grant: &impl ConsultationGrant<RecordConsent>,
        decision: ConsentDecision,
        at: Timestamp,
    ) -> Result<Option<ConsentEntry>, CallError> {
        let consultation = grant.consultation().id;
        let lock = self.room(consultation, true).expect("created when missing");
        let room = lock.lock().await;
        if room.closed {
            return Err(CallError::Ended);
        }
        let room_id = RoomId(consultation.as_uuid());
        let participant = ParticipantId(grant.actor().as_uuid());
        if decision == ConsentDecision::Withdrawn {
            self.inner
                .recorder
                .set_consent(room_id, participant, false)
                .await?;
        }
        let entry = store.record_consent(grant, decision, at).await?;
        if decision == ConsentDecision::Given && room.open {
            self.inner
                .recorder
                .set_consent(room_id, participant, true)
                .await?;
        }
        Ok(entry)
    }

    /// Sends the room's frames to segment `index` of the recording from now on.
    async fn record(
        &self,
        store: &Store,
        grant: &impl ConsultationGrant<JoinConsultation>,
        facts: &CallFacts,
        index: u32,
        mode: ConsultationMode,
        room: &mut Room,
    ) -> Result<(), CallError> {
        let recording = facts.recording;
        let key = self.data_key(store, grant, recording).await?;
        if !room.recorded_here {
            room.clock_offset_us = self.clock_offset_us(&key, facts, room.opened_at_ms);
        }
        let header = SegmentHeader {
            recording: recording.as_uuid(),
            segment: index,
            created_at_ms: now_ms(),
        };
        let (room_id, _) = ids(grant);
        // The recorder finishes the room's previous segment before it opens the new one.
        room.recording = None;
        self.inner
            .recorder
            .start_segment(room_id, header, key, room.clock_offset_us)
            .await?;
        room.recording = Some(mode);
        room.recorded_here = true;
        Ok(())
    }

    /// A recording's clock starts when its first segment file was made. A room opened later (after a
    /// restart) starts its own clock at 0, so its frames are moved on by the time between the two, and
    /// the recording's frames stay in time order across segments.
    fn clock_offset_us(&self, key: &DataKey, facts: &CallFacts, opened_at_ms: u64) -> u64 {
        let recording = facts.recording.as_uuid();
        let origin_ms = facts.segments.iter().find_map(|s| {
            let path = self.inner.recorder.segment_path(recording, s.index);
            SegmentReader::open(&path, key, recording, s.index)
                .ok()
                .map(|reader| reader.header().created_at_ms)
        });
        origin_ms.map_or(0, |origin| {
            opened_at_ms.saturating_sub(origin).saturating_mul(1000)
        })
    }

    /// The recording's data key: made, wrapped and stored by whoever needs it first, unwrapped after.
    async fn data_key(
        &self,
        store: &Store,
        grant: &impl ConsultationGrant<JoinConsultation>,
        recording: RecordingId,
    ) -> Result<DataKey, CallError> {
        let master = &self.inner.master;
        let stored = match store.recording_key(grant).await? {
            Some(stored) => stored,
            None => {
                let wrapped = {
                    let mut rng = rand::rng();
                    DataKey::generate(&mut rng).wrap(master, recording.as_uuid(), &mut rng)
                };
                store
                    .set_recording_key_if_absent(grant, &hex::encode(wrapped.as_bytes()))
                    .await?
            }
        };
        let bytes = hex::decode(stored).map_err(|_| CallError::KeyEncoding)?;
        Ok(WrappedKey::from_bytes(&bytes)?.unwrap(master, recording.as_uuid())?)
    }

    /// Applies a new offer from someone in the call (audio only ↔ video). A change of mode starts a new
    /// segment in that mode; an offer in the same mode only renegotiates.
    pub async fn switch_mode(
        &self,
        store: &Store,
        grant: &impl ConsultationGrant<JoinConsultation>,
        offer: String,
        mode: ConsultationMode,
        at_ms: i64,
    ) -> Result<Answer, CallError> {
        let (room_id, who) = ids(grant);
        let facts = running(store, grant).await?;
        let lock = self
            .room(grant.consultation().id, false)
            .ok_or(CallError::NotInCall)?;
        let mut room = lock.lock().await;
        if room.closed {
            return Err(CallError::Ended);
        }
        if !room.present.contains(&who.id) {
            return Err(CallError::NotInCall);
        }
        let sdp = self.inner.sfu.renegotiate(room_id, who.id, offer).await?;
        if room.recording != Some(mode) {
            let index = store
                .add_segment(grant, SegmentReason::ModeSwitch, mode, at_ms)
                .await?;
            self.record(store, grant, &facts, index, mode, &mut room).await?;
        }
        Ok(Answer { sdp })
    }

    /// Takes the grant's holder out of the call.
    pub async fn leave(&self, grant: &impl ConsultationGrant<JoinConsultation>) -> Result<(), CallError> {
        let (_, who) = ids(grant);
        self.remove(grant.consultation().id, who.id).await
    }

    /// Takes a participant out of the consultation's call, whoever asks: the grant's holder leaving, or
    /// the clinician revoking a guest. When nobody is left, the segment is finished.
    pub async fn remove(
        &self,
        consultation: ConsultationId,
        participant: ParticipantId,
    ) -> Result<(), CallError> {
        let room_id = RoomId(consultation.as_uuid());
        let Some(lock) = self.room(consultation, false) else {
            return Ok(());
        };
        let mut room = lock.lock().await;
        if room.open {
            self.inner.sfu.leave(room_id, participant).await?;
        }
        room.present.remove(&participant);
        if room.present.is_empty() && room.recording.take().is_some() {
            self.inner.recorder.finish(room_id).await?;
        }
        Ok(())
    }

    /// Ends the consultation's call: the room closes and its segment is finished.
    pub async fn close(&self, consultation: ConsultationId) -> Result<(), CallError> {
        let Some(lock) = self.room(consultation, false) else {
            return Ok(());
        };
        let mut room = lock.lock().await;
        room.closed = true;
        self.rooms().remove(&consultation);
        let room_id = RoomId(consultation.as_uuid());
        self.inner.sfu.close_room(room_id).await?;
        self.inner.recorder.finish(room_id).await?;
        self.inner.ended.notify_one();
        Ok(())
    }

    /// Finishes every segment; for the end of `serve`.
    pub async fn shutdown(&self) {
        self.inner.recorder.shutdown().await;
    }
}

/// The room and the participant for a grant: the consultation, and the user or guest as what they are
/// in it. A guest's frames are kept under the guest's id, which never equals an account's.
fn ids(grant: &impl ConsultationGrant<JoinConsultation>) -> (RoomId, Participant) {
    let c = grant.consultation();
    let actor = grant.actor();
    let role = match actor {
        Actor::User(user) if user == c.clinician => Role::Clinician,
        Actor::User(_) => Role::Patient,
        Actor::Guest(_) => Role::Guest,
    };
    (
        RoomId(c.id.as_uuid()),
        Participant {
            id: ParticipantId(actor.as_uuid()),
            role,
        },
    )
}

/// The consultation's facts, if its call may run now.
async fn running(
    store: &Store,
    grant: &impl ConsultationGrant<JoinConsultation>,
) -> Result<CallFacts, CallError> {
    let facts = store
        .consultation_call(grant)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the consultation the gate saw is gone".into()))?;
    match facts.status {
        AppointmentStatus::InConsultation => Ok(facts),
        other => Err(CallError::NotRunning(other)),
    }
}
