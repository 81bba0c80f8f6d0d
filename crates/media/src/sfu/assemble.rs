//! Puts received RTP packets back together into the frames the recorder stores. The SFU forwards
//! packets as they come; only the recording needs whole frames: VP8 frames (RFC 7741) joined from
//! their packets with the payload descriptors taken off, and Opus packets as they are, since each
//! is a frame of its own. These are the bytes a depacketizer hands a decoder, which is what the
//! remuxer writes into WebM.
//!
//! A frame's time is the arrival of the packet that completed it, kept from going backwards so
//! that each track of the recording stays in time order even when a retransmission completes a
//! frame after later ones arrived.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long packets wait on a missing one before the frame it belongs to is given up: longer than
/// a retransmission takes on any network a call survives, since the SFU asks for a lost packet as
/// soon as the gap shows. Frames after the gap wait with it, so the recording keeps their order.
const MAX_WAIT: Duration = Duration::from_millis(250);
/// Packets held at most, whatever their age: a few seconds of high-rate video, so a sender that
/// never fills a gap cannot grow the buffer without bound.
const MAX_HELD: usize = 2048;

/// A frame ready for the recorder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Assembled {
    pub payload: Bytes,
    pub keyframe: bool,
    pub arrival: Instant,
}

/// What a VP8 packet's payload descriptor says, as far as joining packets needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Descriptor {
    /// Bytes of descriptor before the VP8 data.
    len: usize,
    /// S set and partition 0: the packet begins a frame.
    starts_frame: bool,
}

/// Reads the RFC 7741 payload descriptor at the start of `payload`:
///
/// ```text
///       0 1 2 3 4 5 6 7
///      +-+-+-+-+-+-+-+-+
///      |X|R|N|S|R| PID | (REQUIRED)
///      +-+-+-+-+-+-+-+-+
/// X:   |I|L|T|K| RSV   | (OPTIONAL)
///      +-+-+-+-+-+-+-+-+
/// I:   |M| PictureID   | (OPTIONAL, a second byte when M is set)
///      +-+-+-+-+-+-+-+-+
/// L:   |   TL0PICIDX   | (OPTIONAL)
///      +-+-+-+-+-+-+-+-+
/// T/K: |TID|Y| KEYIDX  | (OPTIONAL)
///      +-+-+-+-+-+-+-+-+
/// ```
///
/// `None` for a packet too short for its descriptor, or with no VP8 data after it, or with L set
/// but not T (RFC 7741 section 4.2); str0m's depacketizer refused those too.
fn descriptor(payload: &[u8]) -> Option<Descriptor> {
    let first = *payload.first()?;
    let mut len = 1;
    if first & 0x80 != 0 {
        let extensions = *payload.get(len)?;
        len += 1;
        let (i, l, t, k) = (
            extensions & 0x80 != 0,
            extensions & 0x40 != 0,
            extensions & 0x20 != 0,
            extensions & 0x10 != 0,
        );
        if l && !t {
            return None;
        }
        if i {
            let picture_id = *payload.get(len)?;
            // M: a 15-bit picture id, in two bytes.
            len += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        len += usize::from(l) + usize::from(t || k);
    }
    if payload.len() <= len {
        return None;
    }
    Some(Descriptor {
        len,
        starts_frame: first & 0x10 != 0 && first & 0x07 == 0,
    })
}

/// A packet waiting for the rest of its frame.
struct Held {
    time: u32,
    marker: bool,
    starts_frame: bool,
    payload: Arc<[u8]>,
    /// Where the VP8 data begins in `payload`.
    data: usize,
    arrival: Instant,
}

/// Joins one VP8 stream's packets into frames: packets of one RTP timestamp, in sequence order
/// without a gap, from the one that starts the frame to the one with the marker bit. Frames come
/// out in sequence order; one that can't be completed is dropped, and the call reports it, since
/// the frames after it can't be decoded until a keyframe comes.
#[derive(Default)]
pub(super) struct Vp8Assembler {
    held: BTreeMap<u64, Held>,
    /// The first sequence number after those already given out or given up; `None` until a frame
    /// is found to start at.
    next: Option<u64>,
    /// Since when the first frame held has been waiting on a packet.
    waiting_since: Option<Instant>,
    last_arrival: Option<Instant>,
}

impl Vp8Assembler {
    /// Takes the packet with extended sequence number `seq`, hands `emit` every frame it completes
    /// (and those that waited behind it), and returns whether a frame was given up. A packet
    /// without a valid descriptor is left out, as if lost; one already handed on or given up, or
    /// a repeat, is ignored.
    pub fn push(
        &mut self,
        seq: u64,
        time: u32,
        marker: bool,
        payload: Arc<[u8]>,
        arrival: Instant,
        mut emit: impl FnMut(Assembled),
    ) -> bool {
        if let Some(d) = descriptor(&payload)
            && self.next.is_none_or(|next| seq >= next)
        {
            self.held.entry(seq).or_insert(Held {
                time,
                marker,
                starts_frame: d.starts_frame,
                payload,
                data: d.len,
                arrival,
            });
        }
        self.settle(arrival, &mut emit)
    }

    fn settle(&mut self, now: Instant, emit: &mut impl FnMut(Assembled)) -> bool {
        let mut lost = false;
        while let Some((&first, head)) = self.held.first_key_value() {
            // The first packet held follows the last frame given out, or starts the stream's
            // first frame; otherwise a packet before it is missing.
            let follows = match self.next {
                Some(next) => first == next,
                None => head.starts_frame,
            };
            if follows {
                if !head.starts_frame {
                    // It can't begin a frame, and whatever began its frame is gone.
                    self.held.remove(&first);
                    self.next = Some(first + 1);
                    self.waiting_since = None;
                    lost = true;
                    continue;
                }
                if let Some(last) = self.complete_from(first) {
                    let frame = self.take(first, last);
                    emit(frame);
                    continue;
                }
            }
            let since = *self.waiting_since.get_or_insert(now);
            if now.saturating_duration_since(since) < MAX_WAIT && self.held.len() <= MAX_HELD {
                break;
            }
            // Waited long enough: drop what is held up to the next frame's start.
            lost = true;
            self.waiting_since = None;
            let restart = self
                .held
                .range(first + 1..)
                .find(|(_, p)| p.starts_frame)
                .map(|(&seq, _)| seq);
            match restart {
                Some(seq) => {
                    self.held = self.held.split_off(&seq);
                    self.next = Some(seq);
                }
                None => {
                    let last = self.held.last_key_value().map_or(first, |(&seq, _)| seq);
                    self.held.clear();
                    self.next = Some(last + 1);
                }
            }
        }
        lost
    }

    /// The sequence number of the last packet of the frame whose first packet is `first`, if every
    /// packet of it is here.
    fn complete_from(&self, first: u64) -> Option<u64> {
        let time = self.held.get(&first)?.time;
        for (expected, (&seq, packet)) in (first..).zip(self.held.range(first..)) {
            if seq != expected || packet.time != time {
                return None;
            }
            if packet.marker {
                return Some(seq);
            }
        }
        None
    }

    /// Takes the packets `first..=last` out as one frame.
    fn take(&mut self, first: u64, last: u64) -> Assembled {
        let rest = self.held.split_off(&(last + 1));
        let packets = std::mem::replace(&mut self.held, rest);
        self.next = Some(last + 1);
        self.waiting_since = None;
        let head = &packets[&first];
        let keyframe = is_keyframe(&head.payload[head.data..]);
        let completed = packets.values().map(|p| p.arrival).max().unwrap_or(head.arrival);
        let arrival = self.last_arrival.map_or(completed, |last| last.max(completed));
        self.last_arrival = Some(arrival);
        let payload = if packets.len() == 1 {
            Bytes::from_owner(head.payload.clone()).slice(head.data..)
        } else {
            let len = packets.values().map(|p| p.payload.len() - p.data).sum();
            let mut joined = Vec::with_capacity(len);
            for p in packets.values() {
                joined.extend_from_slice(&p.payload[p.data..]);
            }
            Bytes::from(joined)
        };
        Assembled {
            payload,
            keyframe,
            arrival,
        }
    }
}

/// Whether VP8 data that begins a frame begins a keyframe: the P bit of its payload header
/// (RFC 7741 section 4.3) is 0.
fn is_keyframe(data: &[u8]) -> bool {
    data.first().is_some_and(|b| b & 0x01 == 0)
}

/// Opus packets as they are, each a frame, in sequence order: one that arrives after a later one
/// was handed on is left out, so the recording never steps back.
#[derive(Default)]
pub(super) struct OpusFrames {
    last: Option<u64>,
    last_arrival: Option<Instant>,
}

impl OpusFrames {
    pub fn push(&mut self, seq: u64, payload: Arc<[u8]>, arrival: Instant) -> Option<Assembled> {
        if self.last.is_some_and(|last| seq <= last) {
            return None;
        }
        self.last = Some(seq);
        let arrival = self.last_arrival.map_or(arrival, |last| last.max(arrival));
        self.last_arrival = Some(arrival);
        Some(Assembled {
            payload: Bytes::from_owner(payload),
            keyframe: false,
            arrival,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 packet: a minimal descriptor (S set on the first packet of a frame, PID 0) and `data`.
    fn packet(start: bool, data: &[u8]) -> Arc<[u8]> {
        let mut p = vec![if start { 0x10 } else { 0x00 }];
        p.extend_from_slice(data);
        p.into()
    }

    /// Feeds packets and collects what comes out, and whether anything was given up.
    struct Feed {
        assembler: Vp8Assembler,
        start: Instant,
        frames: Vec<Assembled>,
        lost: bool,
    }

    impl Feed {
        fn new() -> Feed {
            Feed {
                assembler: Vp8Assembler::default(),
                start: Instant::now(),
                frames: Vec::new(),
                lost: false,
            }
        }

        fn push_at(&mut self, ms: u64, seq: u64, time: u32, marker: bool, payload: Arc<[u8]>) {
            let at = self.start + Duration::from_millis(ms);
            let frames = &mut self.frames;
            self.lost |= self
                .assembler
                .push(seq, time, marker, payload, at, |f| frames.push(f));
        }

        fn push(&mut self, seq: u64, time: u32, marker: bool, payload: Arc<[u8]>) {
            self.push_at(0, seq, time, marker, payload);
        }

        fn payloads(&self) -> Vec<&[u8]> {
            self.frames.iter().map(|f| &f.payload[..]).collect()
        }
    }

    /// A three-packet frame: the first packet's data begins with the P bit (0: keyframe).
    fn frame_packets(keyframe: bool, name: u8) -> [Arc<[u8]>; 3] {
        let p = if keyframe { 0x00 } else { 0x01 };
        [
            packet(true, &[p, name, 1]),
            packet(false, &[name, 2]),
            packet(false, &[name, 3]),
        ]
    }

    #[test]
    fn joins_a_frame_in_sequence_order_and_strips_descriptors() {
        let mut feed = Feed::new();
        let [a, b, c] = frame_packets(true, 7);
        feed.push(10, 3000, false, a);
        feed.push(11, 3000, false, b);
        assert!(feed.frames.is_empty(), "no frame before its marker");
        feed.push(12, 3000, true, c);
        assert_eq!(feed.payloads(), [&[0x00, 7, 1, 7, 2, 7, 3][..]]);
        assert!(feed.frames[0].keyframe);
        assert!(!feed.lost);
    }

    #[test]
    fn reordered_packets_and_frames_come_out_in_order() {
        let mut feed = Feed::new();
        let [a, b, c] = frame_packets(true, 1);
        let [d, e, f] = frame_packets(false, 2);
        feed.push(102, 3000, true, c);
        feed.push(100, 3000, false, a);
        // The second frame completes before the first does; it waits its turn.
        feed.push(104, 6000, false, e);
        feed.push(103, 6000, false, d);
        feed.push(105, 6000, true, f);
        assert!(feed.frames.is_empty());
        feed.push(101, 3000, false, b);
        assert_eq!(
            feed.payloads(),
            [&[0x00, 1, 1, 1, 2, 1, 3][..], &[0x01, 2, 1, 2, 2, 2, 3][..]]
        );
        assert!(feed.frames[0].keyframe && !feed.frames[1].keyframe);
        assert!(!feed.lost);
        // A repeat of a packet already handed on changes nothing.
        let [_, b, _] = frame_packets(true, 1);
        feed.push(101, 3000, false, b);
        assert_eq!(feed.frames.len(), 2);
    }

    #[test]
    fn a_frame_with_a_lost_packet_is_dropped_and_reported() {
        let mut feed = Feed::new();
        let [a, _, c] = frame_packets(true, 1);
        feed.push_at(0, 200, 3000, false, a);
        feed.push_at(1, 202, 3000, true, c);
        let [d, e, f] = frame_packets(false, 2);
        feed.push_at(33, 203, 6000, false, d);
        feed.push_at(34, 204, 6000, false, e);
        feed.push_at(35, 205, 6000, true, f);
        assert!(feed.frames.is_empty(), "frames wait for the retransmission");
        assert!(!feed.lost);
        // Nothing came: the incomplete frame is given up, the one behind it handed on.
        let [g, ..] = frame_packets(false, 3);
        feed.push_at(300, 206, 9000, false, g);
        assert!(feed.lost);
        assert_eq!(feed.payloads(), [&[0x01, 2, 1, 2, 2, 2, 3][..]]);
        // The frame's time is the arrival of the packet that completed it.
        assert_eq!(feed.frames[0].arrival, feed.start + Duration::from_millis(35));
        // The lost packet, arriving at last, is too late.
        let [_, b, _] = frame_packets(true, 1);
        feed.push_at(301, 201, 3000, false, b);
        assert_eq!(feed.frames.len(), 1);
    }

    #[test]
    fn a_retransmission_in_time_completes_the_frame() {
        let mut feed = Feed::new();
        let [a, b, c] = frame_packets(true, 1);
        let [d, e, f] = frame_packets(false, 2);
        feed.push_at(0, 300, 3000, false, a);
        feed.push_at(1, 302, 3000, true, c);
        feed.push_at(33, 303, 6000, false, d);
        feed.push_at(34, 304, 6000, false, e);
        feed.push_at(35, 305, 6000, true, f);
        feed.push_at(60, 301, 3000, false, b);
        assert!(!feed.lost);
        assert_eq!(feed.frames.len(), 2);
        // Completed by the retransmission at 60 ms; the frame after it keeps time order.
        let arrivals: Vec<_> = feed.frames.iter().map(|f| f.arrival - feed.start).collect();
        assert_eq!(arrivals, [Duration::from_millis(60), Duration::from_millis(60)]);
    }

    #[test]
    fn joining_mid_frame_waits_for_the_next_start() {
        let mut feed = Feed::new();
        let [_, b, c] = frame_packets(false, 1);
        feed.push_at(0, 11, 3000, false, b);
        feed.push_at(1, 12, 3000, true, c);
        let [d, e, f] = frame_packets(true, 2);
        feed.push_at(300, 13, 6000, false, d);
        feed.push_at(301, 14, 6000, false, e);
        feed.push_at(302, 15, 6000, true, f);
        assert_eq!(feed.payloads(), [&[0x00, 2, 1, 2, 2, 2, 3][..]]);
        assert!(feed.frames[0].keyframe);
    }

    #[test]
    fn single_packet_frames_and_sequence_wrap() {
        let mut feed = Feed::new();
        // Extended sequence numbers carry on past 65535.
        for (i, seq) in [65_534u64, 65_535, 65_536, 65_537].into_iter().enumerate() {
            let time = 3000 * i as u32;
            feed.push(seq, time, true, packet(true, &[u8::from(i > 0), i as u8]));
        }
        assert_eq!(feed.frames.len(), 4);
        assert!(feed.frames[0].keyframe);
        assert!(feed.frames[1..].iter().all(|f| !f.keyframe));
        assert_eq!(&feed.frames[3].payload[..], &[1, 3]);
    }

    /// Every optional descriptor field: X with I (7- and 15-bit picture ids), L with T, T alone,
    /// K alone, and T with K share one byte.
    #[test]
    fn descriptor_extensions_are_stripped() {
        let cases: [(&[u8], usize); 8] = [
            (&[0x10], 1),
            (&[0x90, 0x00], 2),
            (&[0x90, 0x80, 0x05], 3),
            (&[0x90, 0x80, 0x85, 0x17], 4),
            (&[0x90, 0xe0, 0x85, 0x17, 0x21, 0x40], 6),
            (&[0x90, 0x20, 0x40], 3),
            (&[0x90, 0x10, 0x03], 3),
            (&[0x90, 0xb0, 0x12, 0x43], 4),
        ];
        for (head, len) in cases {
            let mut payload = head.to_vec();
            payload.extend_from_slice(&[0x00, 0xaa, 0xbb]);
            assert_eq!(
                descriptor(&payload),
                Some(Descriptor {
                    len,
                    starts_frame: true
                }),
                "{head:02x?}"
            );
            let mut feed = Feed::new();
            feed.push(1, 0, true, payload.into());
            assert_eq!(feed.payloads(), [&[0x00, 0xaa, 0xbb][..]], "{head:02x?}");
            assert!(feed.frames[0].keyframe);
        }
    }

    #[test]
    fn bad_descriptors_are_refused() {
        // Short for the fields it announces, nothing after it, or L without T.
        for bad in [
            &[][..],
            &[0x90],
            &[0x90, 0x80],
            &[0x90, 0x80, 0x85],
            &[0x10],
            &[0x90, 0x40, 0x01, 0x00],
        ] {
            assert_eq!(descriptor(bad), None, "{bad:02x?}");
        }
        // A continuation (S clear) or a later partition (PID 1) does not start a frame.
        assert!(!descriptor(&[0x00, 0x01]).unwrap().starts_frame);
        assert!(!descriptor(&[0x11, 0x01]).unwrap().starts_frame);
    }

    #[test]
    fn a_packet_of_another_partition_does_not_start_a_frame() {
        let mut feed = Feed::new();
        feed.push(1, 0, false, packet(true, &[0x00, 1]));
        // Partition 1 begins (S set, PID 1) within the same frame.
        let mut second: Vec<u8> = vec![0x11];
        second.extend_from_slice(&[2]);
        feed.push(2, 0, true, second.into());
        assert_eq!(feed.payloads(), [&[0x00, 1, 2][..]]);
    }

    #[test]
    fn opus_packets_pass_through_in_order() {
        let start = Instant::now();
        let mut opus = OpusFrames::default();
        let a = opus.push(5, Arc::from(&b"abc"[..]), start).unwrap();
        assert_eq!(&a.payload[..], b"abc");
        assert!(!a.keyframe);
        assert!(opus.push(7, Arc::from(&b"d"[..]), start).is_some());
        assert_eq!(opus.push(6, Arc::from(&b"late"[..]), start), None);
        assert_eq!(opus.push(7, Arc::from(&b"again"[..]), start), None);
    }
}
