//! The video-call SFU: a sans-IO selective forwarding unit built on str0m.
//!
//! A [`Sfu`] holds rooms, one per consultation, each opened with its [`RoomId`]. A participant
//! joins a room with an SDP offer and gets the answer; from then on every RTP packet it sends is
//! written, as it comes, to the other participants of the same room, and every media frame those
//! packets make up is handed to the recorder as a [`RecordedFrame`] that carries the room and the
//! sender as they were fixed when the room was opened and the participant joined — the recorder
//! never has to look either up.
//!
//! The SFU is ICE-lite: it never gathers candidates, it announces one host candidate (the
//! configured public address) and answers the browser's connectivity checks. All participants of
//! all rooms share one UDP socket; incoming datagrams are routed to a participant by the ICE
//! username on STUN and by the remote address otherwise. [`driver`] owns that socket, and
//! [`recorder`] writes the recorded frames to each room's current recording segment.
//!
//! A room holds at most [`MAX_PARTICIPANTS`]: a consultation's patient and clinician and at most
//! one guest they invited (an interpreter, say). The SFU never starts a negotiation itself, so
//! each browser offers, per kind, the lines it needs to receive everyone else: its own
//! send-and-receive line and `MAX_PARTICIPANTS - 2` receive-only ones after it. Each participant
//! has a seat in the room (by role when it is free: patient 0, clinician 1, guest 2), kept across
//! reconnects and renegotiations; a receiver gets the others in slots, the other seats in order
//! with its own left out, and slot n is the n-th open line of the kind it offered. So two
//! senders never share a line, everyone stays on their line while others come and go, and a
//! keyframe request on a line goes to the sender in its slot. A browser that offers one line
//! per kind gets slot 0 only: enough for a call of a patient and a clinician.
//!
//! Anyone switches between audio only and video by offering again ([`Sfu::renegotiate`]); a
//! browser that lost its connection joins again, which replaces its old connection.

mod assemble;
pub mod driver;
pub mod recorder;
mod room;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::error::{IceError, RtcError, SdpError};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input};
use uuid::Uuid;

use crate::segment::Frame;
use room::{Outputs, Room};

/// A patient, a clinician and one invited guest; a fourth join is refused (see the module docs).
pub const MAX_PARTICIPANTS: usize = 3;

/// Names a room; the server uses the consultation's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub Uuid);

/// Names a participant; the server uses the user's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub Uuid);

/// What a participant is in the consultation, as the server's access gate decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Patient,
    Clinician,
    /// Someone a participant invited into the call, such as an interpreter.
    Guest,
}

/// Who joined: fixed at join and copied into every frame the participant sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Participant {
    pub id: ParticipantId,
    pub role: Role,
}

/// A media frame one participant sent, for the recorder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedFrame {
    pub room: RoomId,
    pub sender: Participant,
    /// Opus (audio) or VP8 (video), as received. The timestamp is the arrival time in
    /// microseconds since the room was opened: one clock for both tracks and both
    /// participants, which RTP timestamps (random origin per stream) are not.
    pub frame: Frame,
}

/// A datagram to send from the SFU's socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("the announced address {0} can't be an ICE host candidate")]
    BadAddress(SocketAddr, #[source] IceError),
    #[error("room {0:?} is already open")]
    RoomExists(RoomId),
    #[error("room {0:?} is not open")]
    UnknownRoom(RoomId),
    #[error("room {0:?} already has {MAX_PARTICIPANTS} participants")]
    RoomFull(RoomId),
    #[error("{1:?} is not in room {0:?}")]
    UnknownParticipant(RoomId, ParticipantId),
    #[error("the offer is not valid SDP")]
    BadOffer(#[source] SdpError),
    #[error("the offer could not be accepted")]
    Negotiation(#[source] RtcError),
}

/// The sans-IO SFU: feed it datagrams, time and signaling; take transmits and recorded frames.
pub struct Sfu {
    /// The address browsers send to; every datagram is handed to str0m as addressed to it,
    /// since the socket may be bound to another (0.0.0.0, or a private address behind NAT).
    public_addr: SocketAddr,
    candidate: Candidate,
    rooms: HashMap<RoomId, Room>,
    /// Remote address → participant, learnt from routed datagrams, so that most datagrams
    /// skip asking every connection whether it is theirs.
    routes: HashMap<SocketAddr, (RoomId, ParticipantId)>,
    out: Outputs,
}

impl Sfu {
    /// An SFU that announces `public_addr` as its only candidate.
    pub fn new(public_addr: SocketAddr) -> Result<Self, SfuError> {
        let candidate =
            Candidate::host(public_addr, "udp").map_err(|e| SfuError::BadAddress(public_addr, e))?;
        Ok(Self {
            public_addr,
            candidate,
            rooms: HashMap::new(),
            routes: HashMap::new(),
            out: Outputs::default(),
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// Opens the room for a consultation; its frames are timed from `now`.
    pub fn open_room(&mut self, room: RoomId, now: Instant) -> Result<(), SfuError> {
        if self.rooms.contains_key(&room) {
            return Err(SfuError::RoomExists(room));
        }
        self.rooms.insert(room, Room::new(room, now));
        Ok(())
    }

    /// Closes a room and drops its connections. Returns whether it was open.
    pub fn close_room(&mut self, room: RoomId) -> bool {
        self.routes.retain(|_, (r, _)| *r != room);
        self.rooms.remove(&room).is_some()
    }

    /// Joins `who` to an open room with the browser's SDP offer and returns the SDP answer.
    /// A participant already in the room is replaced: that is how a browser reconnects.
    pub fn join(
        &mut self,
        room: RoomId,
        who: Participant,
        offer: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        let offer = parse_offer(offer)?;
        let r = self.rooms.get_mut(&room).ok_or(SfuError::UnknownRoom(room))?;
        let answer = r.join(who, self.candidate.clone(), offer, now, &mut self.out)?;
        // The old connection's addresses must not route to the new one.
        self.routes.retain(|_, route| *route != (room, who.id));
        Ok(answer)
    }

    /// Applies a new offer from a participant in the room (audio only ↔ video) and returns
    /// the answer. The connection, and so the room and the sender in its frames, stay.
    pub fn renegotiate(
        &mut self,
        room: RoomId,
        participant: ParticipantId,
        offer: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        let offer = parse_offer(offer)?;
        let r = self.rooms.get_mut(&room).ok_or(SfuError::UnknownRoom(room))?;
        r.renegotiate(participant, offer, now, &mut self.out)
    }

    /// Removes a participant from a room. Returns whether they were in it.
    pub fn leave(&mut self, room: RoomId, participant: ParticipantId) -> bool {
        self.routes.retain(|_, route| *route != (room, participant));
        self.rooms.get_mut(&room).is_some_and(|r| r.leave(participant))
    }

    /// Routes a datagram that arrived on the SFU's socket from `source`. Datagrams that belong
    /// to no participant (stray, or from a connection that was replaced) are dropped. A media
    /// packet is written to the other participants' connections, which send it on their next
    /// timeout, due at once: call [`handle_timeout`](Self::handle_timeout) once the datagrams at
    /// hand are handled, so that each receiver sends all of them in one timer run.
    pub fn handle_datagram(&mut self, source: SocketAddr, contents: &[u8], now: Instant) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.public_addr, contents) else {
            return;
        };
        let input = Input::Receive(now, receive);
        let known = self.routes.get(&source).copied().filter(|(room, participant)| {
            self.rooms
                .get(room)
                .is_some_and(|r| r.accepts(*participant, &input))
        });
        let route = known.or_else(|| {
            self.rooms
                .values()
                .find_map(|r| r.accepting(&input).map(|participant| (r.id(), participant)))
        });
        let Some(route @ (room, participant)) = route else {
            return;
        };
        if known.is_none() {
            self.routes.insert(source, route);
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.handle_input(participant, input, now, &mut self.out);
        }
    }

    /// Advances time: runs every connection whose timeout has come, and drops connections that
    /// have closed (ICE lost, DTLS failed); their browsers join again to come back.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut dropped = false;
        for room in self.rooms.values_mut() {
            dropped |= room.handle_timeout(now, &mut self.out);
        }
        if dropped {
            let rooms = &self.rooms;
            self.routes
                .retain(|_, (room, participant)| rooms.get(room).is_some_and(|r| r.contains(*participant)));
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due, if any connection exists.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.rooms.values().filter_map(Room::next_timeout).min()
    }

    /// The next datagram to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next frame for the recorder, in order of arrival.
    pub fn poll_recorded(&mut self) -> Option<RecordedFrame> {
        self.out.recorded.pop_front()
    }
}

fn parse_offer(offer: &str) -> Result<str0m::change::SdpOffer, SfuError> {
    str0m::change::SdpOffer::from_sdp_string(offer).map_err(SfuError::BadOffer)
}
