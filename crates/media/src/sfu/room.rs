//! One consultation's room: its participants' str0m connections and the forwarding between them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::change::SdpOffer;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tracing::debug;

use super::{MAX_PARTICIPANTS, Participant, ParticipantId, RecordedFrame, Role, RoomId, SfuError, Transmit};
use crate::segment::{Frame, Track};

/// Loss comes in bursts; one keyframe request per burst is enough.
const LOSS_KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// What the SFU has for its caller.
#[derive(Default)]
pub(super) struct Outputs {
    pub transmits: VecDeque<Transmit>,
    pub recorded: VecDeque<RecordedFrame>,
}

pub(super) struct Room {
    id: RoomId,
    opened_at: Instant,
    peers: Vec<Peer>,
    /// Who holds each seat. A seat is kept across reconnects and renegotiations, and while a lost
    /// connection has not joined again, so that everyone else's lines for that participant stay
    /// where they were; it is freed by leaving, or taken over when a newcomer needs it.
    seats: [Option<ParticipantId>; MAX_PARTICIPANTS],
}

/// One participant's connection.
struct Peer {
    who: Participant,
    seat: usize,
    rtc: Rtc,
    timeout: Instant,
    /// The browser's media lines in the order they appeared. Of the open lines of a kind that the
    /// SFU may send on, the n-th carries the participant in this receiver's slot n.
    mids: Vec<(Mid, MediaKind)>,
    last_loss_keyframe_request: Option<Instant>,
}

/// Something one connection's output asks of the others in the room.
enum Work {
    /// A frame to write to everyone in the room but its sender, each on the line of their
    /// slot for the sender's seat.
    Forward {
        from: ParticipantId,
        seat: usize,
        data: Box<MediaData>,
    },
    /// `receiver` needs a keyframe of the video on its line `line`, or of everyone else's video
    /// when `None`.
    Keyframe {
        receiver: ParticipantId,
        line: Option<Mid>,
        kind: KeyframeRequestKind,
    },
}

/// State for draining connections: str0m requires a full drain of `poll_output` after each
/// change to a connection, and draining one connection yields work for the others.
struct Drain<'a> {
    room: RoomId,
    opened_at: Instant,
    now: Instant,
    work: VecDeque<Work>,
    out: &'a mut Outputs,
}

impl Room {
    pub fn new(id: RoomId, now: Instant) -> Self {
        Self {
            id,
            opened_at: now,
            peers: Vec::new(),
            seats: [None; MAX_PARTICIPANTS],
        }
    }

    pub fn id(&self) -> RoomId {
        self.id
    }

    pub fn contains(&self, participant: ParticipantId) -> bool {
        self.peers.iter().any(|p| p.who.id == participant)
    }

    pub fn accepts(&self, participant: ParticipantId, input: &Input) -> bool {
        self.peers
            .iter()
            .any(|p| p.who.id == participant && p.rtc.accepts(input))
    }

    pub fn accepting(&self, input: &Input) -> Option<ParticipantId> {
        self.peers.iter().find(|p| p.rtc.accepts(input)).map(|p| p.who.id)
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.peers.iter().map(|p| p.timeout).min()
    }

    pub fn join(
        &mut self,
        who: Participant,
        candidate: Candidate,
        offer: SdpOffer,
        now: Instant,
        out: &mut Outputs,
    ) -> Result<String, SfuError> {
        let existing = self.peers.iter().position(|p| p.who.id == who.id);
        if existing.is_none() && self.peers.len() >= MAX_PARTICIPANTS {
            return Err(SfuError::RoomFull(self.id));
        }
        let seat = self.seat_for(who).ok_or(SfuError::RoomFull(self.id))?;
        let rtc = Rtc::builder()
            .set_ice_lite(true)
            // The recorder stores Opus and VP8 as they come; nothing else is negotiated.
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now);
        let mut peer = Peer {
            who,
            seat,
            rtc,
            timeout: now,
            mids: Vec::new(),
            last_loss_keyframe_request: None,
        };
        let mut drain = self.drain(now, out);
        peer.rtc.add_local_candidate(candidate);
        peer.drain(&mut drain);
        // Negotiated before the old connection is replaced, so a bad offer on reconnect
        // leaves the participant as they were.
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(SfuError::Negotiation)?;
        peer.drain(&mut drain);
        match existing {
            Some(i) => self.peers[i] = peer,
            None => self.peers.push(peer),
        }
        self.seats[seat] = Some(who.id);
        self.settle(drain);
        Ok(answer.to_sdp_string())
    }

    pub fn renegotiate(
        &mut self,
        participant: ParticipantId,
        offer: SdpOffer,
        now: Instant,
        out: &mut Outputs,
    ) -> Result<String, SfuError> {
        let id = self.id;
        let mut drain = self.drain(now, out);
        let peer = self
            .peers
            .iter_mut()
            .find(|p| p.who.id == participant)
            .ok_or(SfuError::UnknownParticipant(id, participant))?;
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(SfuError::Negotiation);
        peer.drain(&mut drain);
        self.settle(drain);
        Ok(answer?.to_sdp_string())
    }

    pub fn leave(&mut self, participant: ParticipantId) -> bool {
        let before = self.peers.len();
        self.peers.retain(|p| p.who.id != participant);
        for seat in self.seats.iter_mut().filter(|s| **s == Some(participant)) {
            *seat = None;
        }
        self.peers.len() != before
    }

    /// The seat `who` joins in: the one they hold already (a reconnect), else their role's own if
    /// it is free, else the first free one, else the first held by someone whose connection was
    /// lost. Seats by role make a page's lines predictable: a patient and a clinician see each
    /// other in slot 0, and the guest in slot 1. `None` only when the room is full.
    fn seat_for(&self, who: Participant) -> Option<usize> {
        if let Some(seat) = self.seats.iter().position(|s| *s == Some(who.id)) {
            return Some(seat);
        }
        let preferred = match who.role {
            Role::Patient => 0,
            Role::Clinician => 1,
            Role::Guest => 2,
        };
        let order = || std::iter::once(preferred).chain(0..MAX_PARTICIPANTS);
        let holder = |s: usize| self.seats.get(s).copied();
        order()
            .find(|&s| holder(s) == Some(None))
            .or_else(|| order().find(|&s| holder(s).flatten().is_some_and(|id| !self.contains(id))))
    }

    pub fn handle_input(
        &mut self,
        participant: ParticipantId,
        input: Input,
        now: Instant,
        out: &mut Outputs,
    ) {
        let mut drain = self.drain(now, out);
        let Some(peer) = self.peers.iter_mut().find(|p| p.who.id == participant) else {
            return;
        };
        if let Err(e) = peer.rtc.handle_input(input) {
            debug!(room = ?drain.room, participant = ?participant, error = %e, "closing connection");
            peer.rtc.disconnect();
        }
        peer.drain(&mut drain);
        self.settle(drain);
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outputs) {
        let mut drain = self.drain(now, out);
        for peer in self.peers.iter_mut().filter(|p| p.timeout <= now) {
            if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                debug!(room = ?drain.room, participant = ?peer.who.id, error = %e, "closing connection");
                peer.rtc.disconnect();
            }
            peer.drain(&mut drain);
        }
        self.settle(drain);
        self.peers.retain(|p| p.rtc.is_alive());
    }

    fn drain<'a>(&self, now: Instant, out: &'a mut Outputs) -> Drain<'a> {
        Drain {
            room: self.id,
            opened_at: self.opened_at,
            now,
            work: VecDeque::new(),
            out,
        }
    }

    /// Carries out the work until none is left; writing to a connection may yield more (a
    /// keyframe request), which is carried out in turn.
    fn settle(&mut self, mut drain: Drain) {
        while let Some(work) = drain.work.pop_front() {
            match work {
                Work::Forward { from, seat, data } => {
                    for peer in self.peers.iter_mut().filter(|p| p.who.id != from) {
                        peer.write(&data, slot(peer.seat, seat));
                        peer.drain(&mut drain);
                    }
                }
                Work::Keyframe { receiver, line, kind } => {
                    let Some(r) = self.peers.iter().find(|p| p.who.id == receiver) else {
                        continue;
                    };
                    // A request on a line goes to the sender in that line's slot only.
                    let sender = match line {
                        Some(mid) => match r.slot_of(mid) {
                            Some(slot) => Some(seat_in(r.seat, slot)),
                            None => continue,
                        },
                        None => None,
                    };
                    let senders = self
                        .peers
                        .iter_mut()
                        .filter(|p| p.who.id != receiver && sender.is_none_or(|s| p.seat == s));
                    for peer in senders {
                        peer.request_keyframe(kind);
                        peer.drain(&mut drain);
                    }
                }
            }
        }
    }
}

impl Peer {
    /// Polls the connection until it has nothing more to do now, collecting datagrams, frames
    /// for the recorder and work for the other connections.
    fn drain(&mut self, d: &mut Drain) {
        loop {
            if !self.rtc.is_alive() {
                // Due at once, so that the next timeout round removes it.
                self.timeout = d.now;
                return;
            }
            let output = match self.rtc.poll_output() {
                Ok(output) => output,
                Err(e) => {
                    debug!(room = ?d.room, participant = ?self.who.id, error = %e, "closing connection");
                    self.rtc.disconnect();
                    continue;
                }
            };
            match output {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                Output::Transmit(t) => d.out.transmits.push_back(Transmit {
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Output::Event(event) => self.on_event(event, d),
            }
        }
    }

    fn on_event(&mut self, event: Event, d: &mut Drain) {
        let receiver = self.who.id;
        match event {
            Event::Connected => {
                d.work.push_back(Work::Keyframe {
                    receiver,
                    line: None,
                    kind: KeyframeRequestKind::Pli,
                });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // The browser rejoins with a new offer when its connection fails.
                self.rtc.disconnect();
            }
            Event::MediaAdded(added) => {
                self.mids.retain(|(mid, _)| *mid != added.mid);
                self.mids.push((added.mid, added.kind));
                if added.kind == MediaKind::Video && self.rtc.is_connected() {
                    // Video switched on mid-call: show the other side at once.
                    d.work.push_back(Work::Keyframe {
                        receiver,
                        line: None,
                        kind: KeyframeRequestKind::Pli,
                    });
                }
            }
            Event::MediaChanged(changed) => {
                let video = self
                    .mids
                    .iter()
                    .any(|&(mid, kind)| mid == changed.mid && kind == MediaKind::Video);
                if video && changed.direction.is_sending() && self.rtc.is_connected() {
                    d.work.push_back(Work::Keyframe {
                        receiver,
                        line: None,
                        kind: KeyframeRequestKind::Pli,
                    });
                }
            }
            Event::KeyframeRequest(req) => {
                d.work.push_back(Work::Keyframe {
                    receiver,
                    line: Some(req.mid),
                    kind: req.kind,
                });
            }
            Event::MediaData(data) => {
                let track = if data.params.spec().codec.is_audio() {
                    Track::Audio
                } else {
                    Track::Video
                };
                if track == Track::Video && !data.contiguous {
                    self.request_keyframe_after_loss(d.now);
                }
                let since_open = data.network_time.saturating_duration_since(d.opened_at);
                d.out.recorded.push_back(RecordedFrame {
                    room: d.room,
                    sender: self.who,
                    frame: Frame {
                        track,
                        timestamp_us: u64::try_from(since_open.as_micros()).unwrap_or(u64::MAX),
                        keyframe: data.is_keyframe(),
                        payload: Bytes::from_owner(data.data.clone()),
                    },
                });
                d.work.push_back(Work::Forward {
                    from: self.who.id,
                    seat: self.seat,
                    data: Box::new(data),
                });
            }
            _ => {}
        }
    }

    /// Writes another participant's frame to this browser, on the line of its kind for `slot`;
    /// a browser that offered fewer lines does not get it. Nothing is written before the
    /// connection is up: str0m would queue it, and a browser that never connects would fill
    /// the queue.
    fn write(&mut self, data: &MediaData, slot: usize) {
        if !self.rtc.is_connected() {
            return;
        }
        let kind = if data.params.spec().codec.is_audio() {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        let Some(mid) = self.sending_lines(kind).nth(slot) else {
            return;
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = writer.match_params(data.params) else {
            return;
        };
        if let Err(e) = writer.write(pt, data.network_time, data.time, data.data.clone()) {
            debug!(participant = ?self.who.id, error = %e, "frame not forwarded");
        }
    }

    /// Asks this browser for a keyframe of the video it sends, if it sends any.
    fn request_keyframe(&mut self, kind: KeyframeRequestKind) {
        let Some(mid) = self
            .open_mids(MediaKind::Video, |m| m.direction().is_receiving())
            .next()
        else {
            return;
        };
        if let Some(mut writer) = self.rtc.writer(mid) {
            // Fails only when no video has arrived yet, so there is nothing to refresh.
            let _ = writer.request_keyframe(None, kind);
        }
    }

    fn request_keyframe_after_loss(&mut self, now: Instant) {
        if self
            .last_loss_keyframe_request
            .is_some_and(|t| now < t + LOSS_KEYFRAME_INTERVAL)
        {
            return;
        }
        self.last_loss_keyframe_request = Some(now);
        self.request_keyframe(KeyframeRequestKind::Pli);
    }

    /// The slot of the other participant whose video this browser receives on `mid`.
    fn slot_of(&self, mid: Mid) -> Option<usize> {
        self.sending_lines(MediaKind::Video).position(|m| m == mid)
    }

    /// The open lines of `kind` the SFU may send on, in the order they appeared: slot 0, 1, …
    fn sending_lines(&self, kind: MediaKind) -> impl Iterator<Item = Mid> + '_ {
        self.open_mids(kind, |m| m.direction().is_sending())
    }

    fn open_mids<'a>(
        &'a self,
        kind: MediaKind,
        direction: impl Fn(&str0m::media::Media) -> bool + 'a,
    ) -> impl Iterator<Item = Mid> + 'a {
        self.mids
            .iter()
            .filter(move |(_, k)| *k == kind)
            .map(|(mid, _)| *mid)
            .filter(move |mid| {
                self.rtc
                    .media(*mid)
                    .is_some_and(|m| !m.disabled() && direction(m))
            })
    }
}

/// Where receiver `receiver`'s browser gets the participant in seat `sender`: the other seats
/// in order, its own left out, so a slot stays put whoever else comes and goes.
fn slot(receiver: usize, sender: usize) -> usize {
    if sender > receiver { sender - 1 } else { sender }
}

/// The seat whose media receiver `receiver` gets in `slot`; the inverse of [`slot`].
fn seat_in(receiver: usize, slot: usize) -> usize {
    if slot >= receiver { slot + 1 } else { slot }
}
