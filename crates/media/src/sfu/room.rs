//! One consultation's room: its participants' str0m connections and the forwarding between them.
//!
//! The connections run in str0m's RTP mode: each RTP packet a participant sends is written, as it
//! comes, to the line of its sender's slot at every other participant, with the sequence number and
//! timestamp moved onto that outgoing stream's own (see [`Outgoing`]). Nothing is depacketized or
//! packetized again on the way; only the recorder needs whole frames, which [`assemble`] puts
//! together from the same packets.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc, VideoOrientation};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tracing::debug;

use super::assemble::{Assembled, OpusFrames, Vp8Assembler};
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
    /// The streams this browser sends, by SSRC: one per line it sends on.
    incoming: Vec<Incoming>,
    /// The lines the SFU has written to, and how it numbers what it writes there.
    outgoing: Vec<Outgoing>,
}

/// A stream the browser sends: its line, and its frames being put together for the recorder.
struct Incoming {
    ssrc: Ssrc,
    mid: Mid,
    kind: MediaKind,
    frames: Frames,
}

enum Frames {
    Opus(OpusFrames),
    Vp8(Vp8Assembler),
}

/// One of the browser's lines as the SFU sends on it. The line is one outgoing RTP stream whatever
/// comes into it: its sender's stream, then, after the sender reconnected or someone else took the
/// seat, another one with its own SSRC, sequence numbers and timestamps. Each source is moved onto
/// the line's numbering by a fixed offset, taken so that its first packet follows the line's last
/// one, so the browser sees one continuous stream, and a packet lost on the way in still shows as
/// a gap for the browser to ask for (the sender's retransmission, when it comes, fills it).
struct Outgoing {
    mid: Mid,
    /// The line's payload type for its codec and that codec's clock rate, looked up on first use
    /// and again after each negotiation.
    pt: Option<(Pt, u32)>,
    source: Option<Source>,
    /// The stream the line carried before `source`: a straggler of it must not take the line back.
    previous: Option<(usize, Ssrc)>,
    /// The highest sequence number written, with its timestamp and when it was written.
    last: Option<(u64, u32, Instant)>,
}

/// The stream that currently feeds an outgoing line, and how its numbers map onto the line's.
struct Source {
    seat: usize,
    ssrc: Ssrc,
    /// Its first packet on this line: anything older belongs to before the switch.
    first_seq: u64,
    seq_offset: u64,
    time_offset: u32,
}

/// Something one connection's output asks of the others in the room.
enum Work {
    /// A packet to write to everyone in the room but its sender, each on the line of their
    /// slot for the sender's seat.
    Forward {
        from: ParticipantId,
        seat: usize,
        packet: Forwarded,
    },
    /// `receiver` needs a keyframe of the video on its line `line`, or of everyone else's video
    /// when `None`.
    Keyframe {
        receiver: ParticipantId,
        line: Option<Mid>,
        kind: KeyframeRequestKind,
    },
}

/// What an incoming RTP packet carries on to the other participants.
struct Forwarded {
    kind: MediaKind,
    ssrc: Ssrc,
    /// Extended sequence number and RTP timestamp, as the sender numbered them.
    seq: u64,
    time: u32,
    marker: bool,
    payload: Arc<[u8]>,
    arrival: Instant,
    audio_level: Option<i8>,
    voice_activity: Option<bool>,
    video_orientation: Option<VideoOrientation>,
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
            // Packets are forwarded as they come rather than depacketized into frames and
            // packetized again: see the module docs.
            .set_rtp_mode(true)
            .build(now);
        let mut peer = Peer {
            who,
            seat,
            rtc,
            timeout: now,
            mids: Vec::new(),
            last_loss_keyframe_request: None,
            incoming: Vec::new(),
            outgoing: Vec::new(),
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

    /// Runs the connections whose timeout has come; returns whether a closed one was dropped.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outputs) -> bool {
        let mut drain = self.drain(now, out);
        for peer in self.peers.iter_mut().filter(|p| p.timeout <= now) {
            if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                debug!(room = ?drain.room, participant = ?peer.who.id, error = %e, "closing connection");
                peer.rtc.disconnect();
            }
            peer.drain(&mut drain);
        }
        self.settle(drain);
        let before = self.peers.len();
        self.peers.retain(|p| p.rtc.is_alive());
        self.peers.len() != before
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
                Work::Forward { from, seat, packet } => {
                    for peer in self.peers.iter_mut().filter(|p| p.who.id != from) {
                        if peer.forward(&packet, seat) {
                            peer.sends_at(drain.now);
                        }
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
                        if peer.request_keyframe(kind) {
                            peer.sends_at(drain.now);
                        }
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

    /// Something was queued on the connection (a packet written, a keyframe request), which str0m
    /// sends on its next timeout: that is due now. The caller runs due timeouts once it has handled
    /// the datagrams at hand, so a receiver sends everything written to it meanwhile in one go
    /// rather than running its timers once per packet (which costs more than the packet).
    fn sends_at(&mut self, now: Instant) {
        self.timeout = self.timeout.min(now);
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
                self.negotiated();
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
                self.negotiated();
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
            Event::RtpPacket(packet) => self.on_packet(&packet, d),
            _ => {}
        }
    }

    /// A negotiation may have changed a line's payload types: look them up again.
    fn negotiated(&mut self) {
        for line in &mut self.outgoing {
            line.pt = None;
        }
    }

    /// Hands the recorder any frame the packet completes and passes the packet on for the others.
    /// Retransmissions the browser sent on request arrive here too, as the packets they repair.
    fn on_packet(&mut self, packet: &RtpPacket, d: &mut Drain) {
        let header = &packet.header;
        let Some(i) = self.incoming_index(header.ssrc) else {
            return;
        };
        let seq = *packet.seq_no;
        let (room, sender, opened_at) = (d.room, self.who, d.opened_at);
        let record = |track: Track, frame: Assembled| RecordedFrame {
            room,
            sender,
            frame: Frame {
                track,
                timestamp_us: u64::try_from(frame.arrival.saturating_duration_since(opened_at).as_micros())
                    .unwrap_or(u64::MAX),
                keyframe: frame.keyframe,
                payload: frame.payload,
            },
        };
        let incoming = &mut self.incoming[i];
        let kind = incoming.kind;
        match &mut incoming.frames {
            Frames::Opus(opus) => {
                if let Some(frame) = opus.push(seq, packet.payload.clone(), packet.timestamp) {
                    d.out.recorded.push_back(record(Track::Audio, frame));
                }
            }
            Frames::Vp8(vp8) => {
                let recorded = &mut d.out.recorded;
                let lost = vp8.push(
                    seq,
                    header.timestamp,
                    header.marker,
                    packet.payload.clone(),
                    packet.timestamp,
                    |frame| recorded.push_back(record(Track::Video, frame)),
                );
                if lost {
                    self.request_keyframe_after_loss(d.now);
                }
            }
        }
        d.work.push_back(Work::Forward {
            from: self.who.id,
            seat: self.seat,
            packet: Forwarded {
                kind,
                ssrc: header.ssrc,
                seq,
                time: header.timestamp,
                marker: header.marker,
                payload: packet.payload.clone(),
                arrival: packet.timestamp,
                audio_level: header.ext_vals.audio_level,
                voice_activity: header.ext_vals.voice_activity,
                video_orientation: header.ext_vals.video_orientation,
            },
        });
    }

    /// Where the stream `ssrc` is in [`incoming`](Self::incoming), added on its first packet. A new
    /// stream on a line (the browser changed its SSRC) takes the old one's place.
    fn incoming_index(&mut self, ssrc: Ssrc) -> Option<usize> {
        if let Some(i) = self.incoming.iter().position(|s| s.ssrc == ssrc) {
            return Some(i);
        }
        let mid = self.rtc.direct_api().stream_rx(&ssrc)?.mid();
        let kind = self.rtc.media(mid)?.kind();
        self.incoming.retain(|s| s.mid != mid);
        let frames = match kind {
            MediaKind::Audio => Frames::Opus(OpusFrames::default()),
            MediaKind::Video => Frames::Vp8(Vp8Assembler::default()),
        };
        self.incoming.push(Incoming {
            ssrc,
            mid,
            kind,
            frames,
        });
        Some(self.incoming.len() - 1)
    }

    /// Writes a packet of the participant in seat `seat` to this browser, on the line of its kind
    /// for that seat's slot; a browser that offered fewer lines does not get it. Returns whether it
    /// was written. Nothing is written before the connection is up: str0m would queue it, and a
    /// browser that never connects would fill the queue.
    fn forward(&mut self, p: &Forwarded, seat: usize) -> bool {
        if !self.rtc.is_connected() {
            return false;
        }
        let Some(mid) = self.sending_lines(p.kind).nth(slot(self.seat, seat)) else {
            return false;
        };
        let i = match self.outgoing.iter().position(|o| o.mid == mid) {
            Some(i) => i,
            None => {
                self.outgoing.push(Outgoing {
                    mid,
                    pt: None,
                    source: None,
                    previous: None,
                    last: None,
                });
                self.outgoing.len() - 1
            }
        };
        if self.outgoing[i].pt.is_none() {
            self.outgoing[i].pt = line_pt(&self.rtc, mid, p.kind);
        }
        let line = &mut self.outgoing[i];
        let Some((pt, rate)) = line.pt else {
            return false;
        };
        let Some((seq, time)) = line.map(p, seat, rate) else {
            return false;
        };
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return false;
        };
        let ext_vals = ExtensionValues {
            audio_level: p.audio_level,
            voice_activity: p.voice_activity,
            video_orientation: p.video_orientation,
            ..ExtensionValues::default()
        };
        stream.write_rtp(
            RtpWrite::new(pt, seq.into(), time, p.arrival, p.payload.clone())
                .marker(p.marker)
                .ext_vals(ext_vals)
                // Kept for the browser's retransmission requests (on lines with RTX negotiated).
                .nackable(true),
        );
        true
    }

    /// Asks this browser for a keyframe of the video it sends, if it sends any. Returns whether a
    /// request was queued.
    fn request_keyframe(&mut self, kind: KeyframeRequestKind) -> bool {
        let Some(mid) = self
            .open_mids(MediaKind::Video, |m| m.direction().is_receiving())
            .next()
        else {
            return false;
        };
        // None until the browser's video stream is known, so there is nothing to refresh.
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_rx_by_mid(mid, None) else {
            return false;
        };
        stream.request_keyframe(kind);
        true
    }

    fn request_keyframe_after_loss(&mut self, now: Instant) {
        if self
            .last_loss_keyframe_request
            .is_some_and(|t| now < t + LOSS_KEYFRAME_INTERVAL)
        {
            return;
        }
        self.last_loss_keyframe_request = Some(now);
        if self.request_keyframe(KeyframeRequestKind::Pli) {
            self.sends_at(now);
        }
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

impl Outgoing {
    /// The sequence number and timestamp on this line for `p`, a packet of the participant in seat
    /// `seat`; `None` for one older than the switch to its stream, or from the stream it replaced.
    fn map(&mut self, p: &Forwarded, seat: usize, rate: u32) -> Option<(u64, u32)> {
        if self.previous == Some((seat, p.ssrc)) {
            return None;
        }
        let switched = self
            .source
            .as_ref()
            .is_none_or(|s| s.seat != seat || s.ssrc != p.ssrc);
        if switched {
            self.previous = self.source.as_ref().map(|s| (s.seat, s.ssrc));
            let (seq, time) = match self.last {
                // After the line's last packet, as far on in time as the source is later.
                Some((seq, time, at)) => {
                    let elapsed = p.arrival.saturating_duration_since(at);
                    let ticks = elapsed.as_micros() * u128::from(rate) / 1_000_000;
                    (seq + 1, time.wrapping_add((ticks as u32).max(1)))
                }
                // The line's first stream keeps its numbers, with no rollover yet: a receiver
                // takes an outgoing stream's first packet as in the first cycle (RFC 3711 3.3.1).
                None => (p.seq & 0xffff, p.time),
            };
            self.source = Some(Source {
                seat,
                ssrc: p.ssrc,
                first_seq: p.seq,
                seq_offset: seq.wrapping_sub(p.seq),
                time_offset: time.wrapping_sub(p.time),
            });
        }
        let source = self.source.as_ref()?;
        if p.seq < source.first_seq {
            return None;
        }
        let seq = p.seq.wrapping_add(source.seq_offset);
        let time = p.time.wrapping_add(source.time_offset);
        if self.last.is_none_or(|(last, ..)| seq > last) {
            self.last = Some((seq, time, p.arrival));
        }
        Some((seq, time))
    }
}

/// The payload type line `mid` of `rtc` has for the codec of `kind`, with its clock rate: the SFU
/// negotiates Opus and VP8 only, one codec per kind.
fn line_pt(rtc: &Rtc, mid: Mid, kind: MediaKind) -> Option<(Pt, u32)> {
    let codec = match kind {
        MediaKind::Audio => Codec::Opus,
        MediaKind::Video => Codec::Vp8,
    };
    let media = rtc.media(mid)?;
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && media.remote_pts().contains(&p.pt()))
        .map(|p| (p.pt(), p.spec().clock_rate.get()))
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

#[cfg(test)]
mod tests {
    use super::*;

    const VIDEO_RATE: u32 = 90_000;

    /// A video packet of `ssrc` with sequence number `seq` and timestamp `time`, arriving `ms` in.
    fn packet(start: Instant, ssrc: u32, seq: u64, time: u32, ms: u64) -> Forwarded {
        Forwarded {
            kind: MediaKind::Video,
            ssrc: ssrc.into(),
            seq,
            time,
            marker: true,
            payload: Arc::from(&[0x10, 0x00][..]),
            arrival: start + Duration::from_millis(ms),
            audio_level: None,
            voice_activity: None,
            video_orientation: None,
        }
    }

    fn line() -> Outgoing {
        Outgoing {
            mid: Mid::from("v"),
            pt: None,
            source: None,
            previous: None,
            last: None,
        }
    }

    /// The first stream on a line keeps its numbers (in the first rollover cycle); a gap stays a
    /// gap, and a late packet keeps its place.
    #[test]
    fn a_line_keeps_its_first_streams_numbers_and_gaps() {
        let start = Instant::now();
        let mut out = line();
        // The sender's extended numbers are already past a rollover.
        let first = 65_536 * 2 + 100;
        assert_eq!(
            out.map(&packet(start, 1, first, 5000, 0), 0, VIDEO_RATE),
            Some((100, 5000))
        );
        assert_eq!(
            out.map(&packet(start, 1, first + 2, 8000, 33), 0, VIDEO_RATE),
            Some((102, 8000))
        );
        assert_eq!(
            out.map(&packet(start, 1, first + 1, 5000, 34), 0, VIDEO_RATE),
            Some((101, 5000))
        );
        // Before the line's first packet: nothing to map it onto.
        assert_eq!(
            out.map(&packet(start, 1, first - 1, 2000, 35), 0, VIDEO_RATE),
            None
        );
    }

    /// A sender that reconnects comes with a new SSRC, sequence numbers and timestamps; the line
    /// carries on from its last packet, as far on in time as the new stream's first packet came
    /// later, and the new stream's own gaps stay visible.
    #[test]
    fn a_new_stream_on_a_line_continues_its_numbering() {
        let start = Instant::now();
        let mut out = line();
        assert_eq!(
            out.map(&packet(start, 1, 60_000, 1000, 0), 0, VIDEO_RATE),
            Some((60_000, 1000))
        );
        assert_eq!(
            out.map(&packet(start, 1, 60_001, 4000, 33), 0, VIDEO_RATE),
            Some((60_001, 4000))
        );
        // 500 ms later, the reconnected sender's stream: 45 000 ticks of 90 kHz on.
        let (seq, time) = out
            .map(&packet(start, 2, 7, 123_456, 533), 0, VIDEO_RATE)
            .unwrap();
        assert_eq!((seq, time), (60_002, 4000 + 45_000));
        assert_eq!(
            out.map(&packet(start, 2, 9, 123_456 + 6000, 600), 0, VIDEO_RATE),
            Some((60_004, 49_000 + 6000)),
            "a gap in the new stream is a gap on the line"
        );
        // A straggler of the old stream, or of the new one from before it reached the line.
        assert_eq!(out.map(&packet(start, 1, 60_002, 7000, 601), 0, VIDEO_RATE), None);
        assert_eq!(out.map(&packet(start, 2, 6, 123_000, 602), 0, VIDEO_RATE), None);
        assert_eq!(
            out.map(&packet(start, 2, 10, 123_456 + 9000, 633), 0, VIDEO_RATE),
            Some((60_005, 49_000 + 9000)),
            "the new stream goes on where it was"
        );
    }

    /// Someone else taking the seat is a new stream too, even if their SSRC happened to match.
    #[test]
    fn another_seat_on_a_line_is_a_new_stream() {
        let start = Instant::now();
        let mut out = line();
        assert_eq!(out.map(&packet(start, 1, 10, 0, 0), 0, VIDEO_RATE), Some((10, 0)));
        let (seq, _) = out
            .map(&packet(start, 1, 500, 90_000, 10), 1, VIDEO_RATE)
            .unwrap();
        assert_eq!(seq, 11);
    }

    /// Timestamps and sequence numbers wrap as RTP's do: the extended sequence number carries on.
    #[test]
    fn numbers_wrap() {
        let start = Instant::now();
        let mut out = line();
        assert_eq!(
            out.map(&packet(start, 1, 65_535, u32::MAX, 0), 0, VIDEO_RATE),
            Some((65_535, u32::MAX))
        );
        assert_eq!(
            out.map(&packet(start, 1, 65_536, 2999, 33), 0, VIDEO_RATE),
            Some((65_536, 2999))
        );
    }
}
