//! The recording segment log: one file per segment, written append-only, encrypted and
//! authenticated chunk by chunk so that a crash loses only the unsealed tail and any damage is
//! reported instead of played.
//!
//! A recording is a sequence of segments (a new one after each audio↔video switch, reconnect or
//! server restart), all under the recording's [`DataKey`](crate::DataKey).
//!
//! # File format (version 2; integers big-endian)
//!
//! ```text
//! header, 52 bytes
//!   0..8     magic "CFDSEG02"
//!   8..24    recording id (UUID bytes)
//!   24..28   segment index, u32
//!   28..36   created at, Unix ms, u64
//!   36..52   header tag: AES-256-GCM tag of an empty message,
//!            nonce = (segment index, u64::MAX), associated data = bytes 0..36
//! chunks, one after another
//!   0..4     L = length of ciphertext + tag, u32, 16 ≤ L ≤ MAX_CHUNK_LEN
//!   4        kind: 0 = data, 1 = final (the last chunk, written by `finish`)
//!   5..13    chunk index, u64: 0, 1, 2, … in file order
//!   13..     ciphertext ‖ tag (L bytes)
//!            nonce = segment index (4 bytes) ‖ chunk index (8 bytes)
//!            associated data = header bytes 0..36 ‖ chunk bytes 0..13
//! plaintext of a chunk: records, back to back, each led by its type
//!   sender   2 ‖ sender number u8 ‖ participant id (UUID bytes)
//!            names the segment's next sender number (0, 1, 2, … in order, each id once);
//!            it comes before that sender's first frame
//!   frame    track u8 (0 audio, 1 video) ‖ sender number u8 ‖ flags u8 (bit 0 keyframe)
//!            ‖ timestamp µs u64 ‖ payload length u32 ‖ payload
//! the final chunk's plaintext ends with the segment's frame count, u64
//! ```
//!
//! Every frame names who sent it through a one-byte sender number, which the segment maps to
//! the participant's id (a call has two or three people, so 16 bytes on every 80-byte Opus
//! packet would be waste). A sender record travels in the same encrypted stream as the frames,
//! so it is authenticated like them, and it is always sealed no later than the first frame
//! that uses it.
//!
//! Every byte is either ciphertext or authenticated: the header binds every chunk to its
//! recording and segment, and the chunk index and kind bind each chunk to its place, so
//! reordered, dropped, duplicated or transplanted chunks fail, as does a cut-off end (no final
//! chunk). The chunk index and kind are also stored in clear so that a reader can name the
//! problem (out of order, truncated) rather than only say "does not authenticate".
//!
//! # Nonces
//!
//! A chunk's nonce is derived from (segment index, chunk index). That is unique only because a
//! data key belongs to one recording and **the caller never reuses a segment index within a
//! recording**, not even one whose file is empty or damaged. [`SegmentWriter::create`] refuses
//! to overwrite an existing file, and a writer never rewrites a chunk: after a failed write it
//! refuses further work, and the caller starts a new segment.

mod reader;
mod writer;

use std::io;
use std::ops::Deref;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::Nonce;
use bytes::Bytes;
use uuid::Uuid;

pub use reader::SegmentReader;
pub use writer::{BackgroundSync, SegmentWriter, Sink};

use crate::sfu::ParticipantId;

/// A chunk is sealed once this much plaintext is buffered.
pub const SEAL_BYTES: usize = 256 * 1024;
/// A chunk is sealed at a [`SegmentWriter::tick`] this long after the last seal. Half the 1 s
/// bound on what a crash may lose, leaving room for late ticks and frames queued on their way.
pub const SEAL_INTERVAL_MS: u64 = 500;
/// Largest frame payload a writer accepts (well above any Opus packet or VP8 frame we expect).
pub const MAX_FRAME_LEN: usize = 8 * 1024 * 1024;
/// Largest chunk (ciphertext + tag) a reader accepts: checked before allocating.
pub const MAX_CHUNK_LEN: usize = 16 * 1024 * 1024;
/// Length of a segment header.
pub const HEADER_LEN: usize = AUTHENTICATED_HEADER_LEN + TAG_LEN;
/// How many participants one segment can name (its sender numbers are one byte).
pub const MAX_SENDERS: usize = 256;

const MAGIC: &[u8; 8] = b"CFDSEG02";
const AUTHENTICATED_HEADER_LEN: usize = 36;
const CHUNK_HEAD_LEN: usize = 13;
const RECORD_HEAD_LEN: usize = 15;
const SENDER_RECORD_LEN: usize = 18;
const RECORD_AUDIO: u8 = 0;
const RECORD_VIDEO: u8 = 1;
const RECORD_SENDER: u8 = 2;
const TRAILER_LEN: usize = 8;
const TAG_LEN: usize = 16;
const KIND_DATA: u8 = 0;
const KIND_FINAL: u8 = 1;
/// The header tag's nonce uses a chunk index no chunk ever reaches.
const HEADER_NONCE_CHUNK: u64 = u64::MAX;

// A chunk is sealed as soon as it reaches SEAL_BYTES, so the largest one holds just under
// SEAL_BYTES plus one sender record, one maximal frame and the trailer: it must still be readable.
const _: () = assert!(
    SEAL_BYTES + SENDER_RECORD_LEN + RECORD_HEAD_LEN + MAX_FRAME_LEN + TRAILER_LEN + TAG_LEN <= MAX_CHUNK_LEN
);
const _: () = assert!(MAX_CHUNK_LEN <= u32::MAX as usize);

/// Which stream a frame belongs to: Opus audio or VP8 video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Track {
    Audio,
    Video,
}

/// One received media frame, stored as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub track: Track,
    pub timestamp_us: u64,
    pub keyframe: bool,
    pub payload: Bytes,
}

/// A frame as a segment gives it back: with the participant who sent it. It dereferences to
/// the [`Frame`], so `stored.track` or `stored.payload` read as on the frame itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFrame {
    pub sender: ParticipantId,
    pub frame: Frame,
}

impl Deref for StoredFrame {
    type Target = Frame;

    fn deref(&self) -> &Frame {
        &self.frame
    }
}

/// What a segment says about itself, checked against what the reader expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub recording: Uuid,
    /// Unique within the recording, never reused (see the module docs).
    pub segment: u32,
    pub created_at_ms: u64,
}

impl SegmentHeader {
    fn authenticated_bytes(&self) -> [u8; AUTHENTICATED_HEADER_LEN] {
        let mut out = [0u8; AUTHENTICATED_HEADER_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8..24].copy_from_slice(self.recording.as_bytes());
        out[24..28].copy_from_slice(&self.segment.to_be_bytes());
        out[28..36].copy_from_slice(&self.created_at_ms.to_be_bytes());
        out
    }
}

/// Why a segment can't be read (further). Frames already yielded came from intact chunks.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("reading segment: {0}")]
    Io(#[from] io::Error),
    #[error("not a Confide recording segment (bad magic or unsupported version)")]
    NotASegment,
    #[error("segment belongs to recording {found}, not {expected}")]
    WrongRecording { expected: Uuid, found: Uuid },
    #[error("segment is number {found} of its recording, not {expected}")]
    WrongSegment { expected: u32, found: u32 },
    #[error("segment header does not authenticate: wrong data key, or the header was altered")]
    WrongKey,
    #[error(
        "segment ends after {intact_chunks} intact chunks without its final chunk: \
         the writer crashed or is still writing"
    )]
    Truncated { intact_chunks: u64 },
    #[error("chunk {chunk} does not authenticate: tampered or corrupted")]
    Tampered { chunk: u64 },
    #[error(
        "chunk {found} found where chunk {expected} belongs: chunks were removed, duplicated or reordered"
    )]
    OutOfOrder { expected: u64, found: u64 },
    #[error("chunk {chunk} claims {len} bytes, more than the {MAX_CHUNK_LEN} allowed: corrupted")]
    TooLarge { chunk: u64, len: u64 },
    #[error("bytes follow the final chunk: appended or corrupted")]
    TrailingData,
    #[error("chunk {chunk} authenticates but is malformed ({reason}): the writer is faulty")]
    Corrupt { chunk: u64, reason: &'static str },
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing segment: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes is over the {MAX_FRAME_LEN}-byte limit")]
    FrameTooLarge { len: usize },
    #[error("an earlier write to this segment failed, so it takes no more: start a new segment")]
    Failed,
    #[error("a segment names at most {MAX_SENDERS} senders: start a new segment")]
    TooManySenders,
}

fn chunk_nonce(segment: u32, chunk: u64) -> Nonce<Aes256Gcm> {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&segment.to_be_bytes());
    nonce[4..].copy_from_slice(&chunk.to_be_bytes());
    nonce.into()
}

fn chunk_aad(
    header: &[u8; AUTHENTICATED_HEADER_LEN],
    chunk_head: &[u8; CHUNK_HEAD_LEN],
) -> [u8; AUTHENTICATED_HEADER_LEN + CHUNK_HEAD_LEN] {
    let mut aad = [0u8; AUTHENTICATED_HEADER_LEN + CHUNK_HEAD_LEN];
    aad[..AUTHENTICATED_HEADER_LEN].copy_from_slice(header);
    aad[AUTHENTICATED_HEADER_LEN..].copy_from_slice(chunk_head);
    aad
}

fn encode_chunk_head(ciphertext_len: usize, kind: u8, index: u64) -> [u8; CHUNK_HEAD_LEN] {
    let len = u32::try_from(ciphertext_len).expect("chunks stay below MAX_CHUNK_LEN");
    let mut head = [0u8; CHUNK_HEAD_LEN];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4] = kind;
    head[5..].copy_from_slice(&index.to_be_bytes());
    head
}

fn encode_sender(out: &mut Vec<u8>, number: u8, sender: ParticipantId) {
    out.push(RECORD_SENDER);
    out.push(number);
    out.extend_from_slice(sender.0.as_bytes());
}

/// Writes a frame record's head; the payload follows it.
fn frame_record_head(frame: &Frame, sender: u8) -> [u8; RECORD_HEAD_LEN] {
    let len = u32::try_from(frame.payload.len()).expect("payload is at most MAX_FRAME_LEN");
    let mut head = [0u8; RECORD_HEAD_LEN];
    head[0] = match frame.track {
        Track::Audio => RECORD_AUDIO,
        Track::Video => RECORD_VIDEO,
    };
    head[1] = sender;
    head[2] = u8::from(frame.keyframe);
    head[3..11].copy_from_slice(&frame.timestamp_us.to_be_bytes());
    head[11..15].copy_from_slice(&len.to_be_bytes());
    head
}

/// One record of a chunk's plaintext.
enum Record {
    Sender { number: u8, id: ParticipantId },
    Frame { sender: u8, frame: Frame },
}

/// Takes the next record off the front of `records`; `Err` names what is malformed.
fn decode_record(records: &mut Bytes) -> Result<Record, &'static str> {
    match records.first() {
        Some(&RECORD_SENDER) => {
            let Some(head) = records.get(..SENDER_RECORD_LEN) else {
                return Err("sender record cut short");
            };
            let number = head[1];
            let id = ParticipantId(Uuid::from_bytes(head[2..].try_into().expect("16 bytes")));
            *records = records.slice(SENDER_RECORD_LEN..);
            Ok(Record::Sender { number, id })
        }
        Some(_) => decode_frame(records),
        None => Err("record cut short"),
    }
}

fn decode_frame(records: &mut Bytes) -> Result<Record, &'static str> {
    let Some(head) = records.get(..RECORD_HEAD_LEN) else {
        return Err("frame record cut short");
    };
    let track = match head[0] {
        RECORD_AUDIO => Track::Audio,
        RECORD_VIDEO => Track::Video,
        _ => return Err("unknown record type"),
    };
    let sender = head[1];
    let keyframe = match head[2] {
        0 => false,
        1 => true,
        _ => return Err("unknown frame flags"),
    };
    let timestamp_us = u64::from_be_bytes(head[3..11].try_into().expect("8 bytes"));
    let len = u32::from_be_bytes(head[11..15].try_into().expect("4 bytes")) as usize;
    let end = RECORD_HEAD_LEN
        .checked_add(len)
        .filter(|&end| end <= records.len())
        .ok_or("frame payload cut short")?;
    let payload = records.slice(RECORD_HEAD_LEN..end);
    *records = records.slice(end..);
    Ok(Record::Frame {
        sender,
        frame: Frame {
            track,
            timestamp_us,
            keyframe,
            payload,
        },
    })
}

#[cfg(test)]
mod tests {
    //! Chunks that authenticate yet are malformed: only a faulty writer holding the key makes
    //! these, so they are built by hand here.

    use aes_gcm::aead::AeadInOut;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::DataKey;

    const HEADER: SegmentHeader = SegmentHeader {
        recording: Uuid::from_u128(0xabc),
        segment: 3,
        created_at_ms: 1_700_000_000_000,
    };

    fn key() -> DataKey {
        DataKey::generate(&mut StdRng::seed_from_u64(1))
    }

    /// A segment holding exactly the given (kind, plaintext) chunks, each properly sealed.
    fn segment_of(key: &DataKey, chunks: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let header = HEADER.authenticated_bytes();
        let mut header_tag = [0u8; TAG_LEN];
        header_tag.copy_from_slice(
            &key.cipher()
                .encrypt_inout_detached(
                    &chunk_nonce(HEADER.segment, HEADER_NONCE_CHUNK),
                    &header,
                    (&mut [][..]).into(),
                )
                .unwrap(),
        );
        out.extend_from_slice(&header);
        out.extend_from_slice(&header_tag);
        for (index, (kind, plaintext)) in chunks.iter().enumerate() {
            let index = index as u64;
            let head = encode_chunk_head(plaintext.len() + TAG_LEN, *kind, index);
            let mut body = plaintext.clone();
            let tag = key
                .cipher()
                .encrypt_inout_detached(
                    &chunk_nonce(HEADER.segment, index),
                    &chunk_aad(&header, &head),
                    (&mut body[..]).into(),
                )
                .unwrap();
            out.extend_from_slice(&head);
            out.extend_from_slice(&body);
            out.extend_from_slice(&tag);
        }
        out
    }

    const SENDER: ParticipantId = ParticipantId(Uuid::from_u128(0x5e));

    fn sender_record(number: u8, id: ParticipantId) -> Vec<u8> {
        let mut out = Vec::new();
        encode_sender(&mut out, number, id);
        out
    }

    /// Sender 0's record, then the frame's.
    fn first_frame_record(track: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = sender_record(0, SENDER);
        out.extend_from_slice(&frame_record(track, 0, flags, payload));
        out
    }

    fn frame_record(track: u8, sender: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![track, sender, flags];
        out.extend_from_slice(&7u64.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn final_plaintext(records: &[u8], count: u64) -> Vec<u8> {
        let mut out = records.to_vec();
        out.extend_from_slice(&count.to_be_bytes());
        out
    }

    /// Everything the reader yields: frames, then at most one error.
    fn read(bytes: &[u8], key: &DataKey) -> (usize, Option<SegmentError>) {
        let reader = SegmentReader::new(bytes, key, HEADER.recording, HEADER.segment).unwrap();
        let mut frames = 0;
        for item in reader {
            match item {
                Ok(_) => frames += 1,
                Err(e) => return (frames, Some(e)),
            }
        }
        (frames, None)
    }

    #[test]
    fn hand_built_segment_reads_like_a_written_one() {
        let key = key();
        let bytes = segment_of(
            &key,
            &[
                (KIND_DATA, first_frame_record(1, 1, b"vp8")),
                (KIND_FINAL, final_plaintext(&frame_record(1, 0, 1, b"vp8"), 2)),
            ],
        );
        let mut written = SegmentWriter::new(Vec::new(), &key, HEADER).unwrap();
        let frame = Frame {
            track: Track::Video,
            timestamp_us: 7,
            keyframe: true,
            payload: Bytes::from_static(b"vp8"),
        };
        written.push(SENDER, &frame).unwrap();
        written.tick(HEADER.created_at_ms + SEAL_INTERVAL_MS).unwrap();
        written.push(SENDER, &frame).unwrap();
        assert_eq!(written.finish().unwrap(), bytes);
        assert!(matches!(read(&bytes, &key), (2, None)));
    }

    #[test]
    fn wrong_frame_count_in_the_final_chunk_is_corrupt() {
        let key = key();
        let record = first_frame_record(0, 0, b"opus");
        let bytes = segment_of(&key, &[(KIND_FINAL, final_plaintext(&record, 2))]);
        assert!(matches!(
            read(&bytes, &key),
            (1, Some(SegmentError::Corrupt { chunk: 0, .. }))
        ));
    }

    #[test]
    fn malformed_records_are_corrupt_not_garbage() {
        let key = key();
        let good = first_frame_record(0, 0, b"opus");
        let mut cut_short = frame_record(0, 0, 0, b"opus");
        cut_short.pop();
        let other = ParticipantId(Uuid::from_u128(0x5f));
        for bad in [
            frame_record(3, 0, 0, b"opus"),
            frame_record(0, 0, 2, b"opus"),
            cut_short,
            frame_record(0, 0, 0, b"opus")[..RECORD_HEAD_LEN - 1].to_vec(),
            // Sender numbers: one not named yet, one named out of turn, an id named twice.
            frame_record(0, 1, 0, b"opus"),
            sender_record(2, other),
            sender_record(1, SENDER),
            sender_record(1, other)[..SENDER_RECORD_LEN - 1].to_vec(),
        ] {
            let mut records = good.clone();
            records.extend_from_slice(&bad);
            let bytes = segment_of(&key, &[(KIND_DATA, records)]);
            let (frames, err) = read(&bytes, &key);
            assert_eq!(frames, 1);
            assert!(
                matches!(err, Some(SegmentError::Corrupt { chunk: 0, .. })),
                "{err:?}"
            );
        }
    }

    #[test]
    fn unknown_chunk_kind_and_final_chunk_without_count_are_corrupt() {
        let key = key();
        for chunk in [
            (2, first_frame_record(0, 0, b"x")),
            (KIND_FINAL, vec![0; TRAILER_LEN - 1]),
        ] {
            let bytes = segment_of(&key, &[chunk]);
            assert!(matches!(
                read(&bytes, &key),
                (0, Some(SegmentError::Corrupt { chunk: 0, .. }))
            ));
        }
    }

    #[test]
    fn chunk_shorter_than_a_tag_is_tampered() {
        let key = key();
        let mut bytes = segment_of(&key, &[]);
        bytes.extend_from_slice(&encode_chunk_head(TAG_LEN - 1, KIND_FINAL, 0));
        bytes.extend_from_slice(&[0; TAG_LEN - 1]);
        assert!(matches!(
            read(&bytes, &key),
            (0, Some(SegmentError::Tampered { chunk: 0 }))
        ));
    }
}
