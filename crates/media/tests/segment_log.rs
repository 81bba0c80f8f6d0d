//! The segment log through its public API: round trips, crash cuts, tampering, wrong keys.

use std::io::{self, Write};

use bytes::Bytes;
use confide_media::segment::MAX_SENDERS;
use confide_media::segment::{HEADER_LEN, MAX_CHUNK_LEN, MAX_FRAME_LEN, SEAL_BYTES, SEAL_INTERVAL_MS};
use confide_media::sfu::ParticipantId;
use confide_media::{
    DataKey, Frame, MasterKey, SegmentError, SegmentHeader, SegmentReader, SegmentWriter, Sink, StoredFrame,
    Track, WriteError,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const RECORDING: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
const OTHER_RECORDING: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);
const START_MS: u64 = 1_750_000_000_000;
const CHUNK_HEAD_LEN: usize = 13;

fn header(segment: u32) -> SegmentHeader {
    SegmentHeader {
        recording: RECORDING,
        segment,
        created_at_ms: START_MS,
    }
}

fn key(seed: u64) -> DataKey {
    DataKey::generate(&mut StdRng::seed_from_u64(seed))
}

/// The people of a call: the patient, the clinician and an interpreter.
const PEOPLE: [ParticipantId; 3] = [
    ParticipantId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a01)),
    ParticipantId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a02)),
    ParticipantId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a03)),
];

/// A frame the patient sent.
fn frame(track: Track, timestamp_us: u64, keyframe: bool, payload: Vec<u8>) -> StoredFrame {
    frame_from(PEOPLE[0], track, timestamp_us, keyframe, payload)
}

fn frame_from(
    sender: ParticipantId,
    track: Track,
    timestamp_us: u64,
    keyframe: bool,
    payload: Vec<u8>,
) -> StoredFrame {
    StoredFrame {
        sender,
        frame: Frame {
            track,
            timestamp_us,
            keyframe,
            payload: Bytes::from(payload),
        },
    }
}

/// Frames as a call alternating 20 ms Opus packets with VP8 frames, each from one of the
/// people, payload bytes and senders from `seed`.
fn call_frames(count: usize, seed: u64) -> Vec<StoredFrame> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let video = i % 3 == 2;
            let len = if video {
                rng.random_range(200..1200)
            } else {
                rng.random_range(0..160)
            };
            let payload = (0..len).map(|_| rng.random()).collect();
            let track = if video { Track::Video } else { Track::Audio };
            let sender = PEOPLE[rng.random_range(0..PEOPLE.len())];
            frame_from(sender, track, i as u64 * 20_000, video && i % 30 == 2, payload)
        })
        .collect()
}

/// Writes `groups` as one segment, one chunk per group: every group but the last is sealed by
/// a tick, the last by `finish`.
fn write_groups(key: &DataKey, segment: u32, groups: &[Vec<StoredFrame>]) -> Vec<u8> {
    let mut writer = SegmentWriter::new(Vec::new(), key, header(segment)).unwrap();
    let (last, sealed) = groups.split_last().unwrap();
    for (i, group) in sealed.iter().enumerate() {
        for f in group {
            writer.push(f.sender, f).unwrap();
        }
        writer.tick(START_MS + (i as u64 + 1) * SEAL_INTERVAL_MS).unwrap();
    }
    for f in last {
        writer.push(f.sender, f).unwrap();
    }
    writer.finish().unwrap()
}

/// Where each chunk ends, read from the length fields (the format is documented, so a test
/// may walk it).
fn chunk_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += CHUNK_HEAD_LEN + len;
        ends.push(at);
    }
    assert_eq!(at, bytes.len());
    ends
}

/// Everything a reader yields: the frames, then the error that ended it, if any. Also checks
/// that nothing follows an error.
fn read_all(
    bytes: &[u8],
    key: &DataKey,
    recording: Uuid,
    segment: u32,
) -> (Vec<StoredFrame>, Option<SegmentError>) {
    let mut reader = match SegmentReader::new(bytes, key, recording, segment) {
        Ok(reader) => reader,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut frames = Vec::new();
    for item in reader.by_ref() {
        match item {
            Ok(f) => frames.push(f),
            Err(e) => {
                assert!(reader.next().is_none(), "the reader goes on after {e}");
                return (frames, Some(e));
            }
        }
    }
    (frames, None)
}

/// A segment with several small chunks, for exhaustive cut and flip checks.
fn small_groups() -> Vec<Vec<StoredFrame>> {
    let frames = call_frames(14, 5);
    vec![
        frames[..3].to_vec(),
        frames[3..4].to_vec(),
        frames[4..9].to_vec(),
        frames[9..13].to_vec(),
        frames[13..].to_vec(),
    ]
}

/// What a reader must yield when `bytes` were cut to `cut` bytes: the frames of every whole
/// chunk before the cut, then `Truncated`.
fn check_cut(groups: &[Vec<StoredFrame>], bytes: &[u8], cut: usize) {
    let key = key(1);
    let (frames, err) = read_all(&bytes[..cut], &key, RECORDING, 4);
    if cut == bytes.len() {
        assert_eq!(frames, groups.concat());
        assert!(err.is_none(), "{err:?}");
        return;
    }
    let whole = chunk_ends(bytes).iter().filter(|&&end| end <= cut).count();
    assert_eq!(frames, groups[..whole].concat(), "cut at {cut}");
    assert!(
        matches!(err, Some(SegmentError::Truncated { intact_chunks }) if intact_chunks == whole as u64),
        "cut at {cut}: {err:?}"
    );
}

/// What a reader must yield when the byte at `at` was xor-ed with `mask` (non-zero): the
/// frames of the chunks before the damaged one, then an error naming the damage.
fn check_flip(groups: &[Vec<StoredFrame>], bytes: &[u8], at: usize, mask: u8) {
    let key = key(1);
    let mut damaged = bytes.to_vec();
    damaged[at] ^= mask;
    let (frames, err) = read_all(&damaged, &key, RECORDING, 4);
    let err = err.unwrap_or_else(|| panic!("flip at {at} went unnoticed"));
    if at < HEADER_LEN {
        assert!(frames.is_empty());
        let expected = match at {
            0..8 => matches!(err, SegmentError::NotASegment),
            8..24 => matches!(err, SegmentError::WrongRecording { .. }),
            24..28 => matches!(err, SegmentError::WrongSegment { .. }),
            _ => matches!(err, SegmentError::WrongKey),
        };
        assert!(expected, "flip at {at}: {err:?}");
        return;
    }
    let ends = chunk_ends(bytes);
    let chunk = ends.iter().filter(|&&end| end <= at).count();
    let start = if chunk == 0 { HEADER_LEN } else { ends[chunk - 1] };
    let c = chunk as u64;
    assert_eq!(frames, groups[..chunk].concat(), "flip at {at}");
    let expected = match at - start {
        // A length that grew runs into the next chunk or off the end of the file.
        0..4 => matches!(
            err,
            SegmentError::TooLarge { chunk, .. } | SegmentError::Tampered { chunk }
                | SegmentError::Truncated { intact_chunks: chunk } if chunk == c
        ),
        // The kind byte is authenticated.
        4 => matches!(err, SegmentError::Tampered { chunk } if chunk == c),
        5..CHUNK_HEAD_LEN => {
            matches!(err, SegmentError::OutOfOrder { expected, .. } if expected == c)
        }
        _ => matches!(err, SegmentError::Tampered { chunk } if chunk == c),
    };
    assert!(expected, "flip at {at} (chunk {chunk}): {err:?}");
}

#[test]
fn many_frames_of_both_tracks_round_trip() {
    let key = key(1);
    let mut frames = call_frames(3000, 1);
    // Large keyframes and an empty payload too; the large ones force size-based seals.
    frames.insert(10, frame(Track::Video, 1, true, vec![0xaa; 300_000]));
    frames.insert(500, frame(Track::Video, 2, true, vec![0x55; 700_000]));
    frames.insert(501, frame(Track::Audio, u64::MAX, false, Vec::new()));

    let mut writer = SegmentWriter::new(Vec::new(), &key, header(7)).unwrap();
    for (i, f) in frames.iter().enumerate() {
        writer.push(f.sender, f).unwrap();
        writer.tick(START_MS + i as u64 * 20).unwrap();
    }
    let bytes = writer.finish().unwrap();
    assert!(chunk_ends(&bytes).len() > 10);

    let reader = SegmentReader::new(&bytes[..], &key, RECORDING, 7).unwrap();
    assert_eq!(*reader.header(), header(7));
    let read: Vec<StoredFrame> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(read, frames);
}

#[test]
fn a_segment_finished_without_frames_is_complete_and_empty() {
    let key = key(1);
    let bytes = SegmentWriter::new(Vec::new(), &key, header(0))
        .unwrap()
        .finish()
        .unwrap();
    let (frames, err) = read_all(&bytes, &key, RECORDING, 0);
    assert!(frames.is_empty());
    assert!(err.is_none(), "{err:?}");
}

#[test]
fn a_cut_at_every_offset_yields_exactly_the_whole_chunks_then_truncated() {
    let groups = small_groups();
    let bytes = write_groups(&key(1), 4, &groups);
    assert_eq!(chunk_ends(&bytes).len(), groups.len());
    for cut in 0..=bytes.len() {
        check_cut(&groups, &bytes, cut);
    }
}

#[test]
fn flipping_the_low_or_high_bit_of_any_byte_is_detected() {
    // Other masks are left to the property test below: every one costs a full read.
    let groups = small_groups();
    let bytes = write_groups(&key(1), 4, &groups);
    for at in 0..bytes.len() {
        for mask in [0x01, 0x80] {
            check_flip(&groups, &bytes, at, mask);
        }
    }
}

fn any_frame() -> impl Strategy<Value = StoredFrame> {
    (
        prop::sample::select(&PEOPLE[..]),
        any::<bool>(),
        any::<u64>(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(sender, video, ts, keyframe, payload)| {
            let track = if video { Track::Video } else { Track::Audio };
            frame_from(sender, track, ts, keyframe, payload)
        })
}

fn any_groups() -> impl Strategy<Value = Vec<Vec<StoredFrame>>> {
    prop::collection::vec(prop::collection::vec(any_frame(), 1..6), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_crash_cut_keeps_every_whole_chunk(groups in any_groups(), cut in any::<prop::sample::Index>()) {
        let bytes = write_groups(&key(1), 4, &groups);
        check_cut(&groups, &bytes, cut.index(bytes.len() + 1));
    }

    #[test]
    fn any_byte_change_is_an_error_and_never_a_wrong_frame(
        groups in any_groups(),
        at in any::<prop::sample::Index>(),
        mask in 1..=u8::MAX,
    ) {
        let bytes = write_groups(&key(1), 4, &groups);
        check_flip(&groups, &bytes, at.index(bytes.len()), mask);
    }
}

/// `bytes` with chunk `a` and chunk `b` (a < b) exchanged.
fn swap_chunks(bytes: &[u8], a: usize, b: usize) -> Vec<u8> {
    let ends = chunk_ends(bytes);
    let start = |i: usize| if i == 0 { HEADER_LEN } else { ends[i - 1] };
    let chunk = |i: usize| &bytes[start(i)..ends[i]];
    [
        &bytes[..start(a)],
        chunk(b),
        &bytes[ends[a]..start(b)],
        chunk(a),
        &bytes[ends[b]..],
    ]
    .concat()
}

fn set_chunk_index(bytes: &mut [u8], chunk: usize, index: u64) {
    let ends = chunk_ends(bytes);
    let start = if chunk == 0 { HEADER_LEN } else { ends[chunk - 1] };
    bytes[start + 5..start + 13].copy_from_slice(&index.to_be_bytes());
}

#[test]
fn reordered_dropped_or_duplicated_chunks_are_out_of_order() {
    let key = key(1);
    let groups = small_groups();
    let bytes = write_groups(&key, 4, &groups);
    let ends = chunk_ends(&bytes);

    let swapped = swap_chunks(&bytes, 1, 2);
    let (frames, err) = read_all(&swapped, &key, RECORDING, 4);
    assert_eq!(frames, groups[0]);
    assert!(matches!(
        err,
        Some(SegmentError::OutOfOrder {
            expected: 1,
            found: 2
        })
    ));

    let dropped = [&bytes[..ends[0]], &bytes[ends[1]..]].concat();
    let (frames, err) = read_all(&dropped, &key, RECORDING, 4);
    assert_eq!(frames, groups[0]);
    assert!(matches!(
        err,
        Some(SegmentError::OutOfOrder {
            expected: 1,
            found: 2
        })
    ));

    let duplicated = [&bytes[..ends[1]], &bytes[ends[0]..]].concat();
    let (frames, err) = read_all(&duplicated, &key, RECORDING, 4);
    assert_eq!(frames, groups[..2].concat());
    assert!(matches!(
        err,
        Some(SegmentError::OutOfOrder {
            expected: 2,
            found: 1
        })
    ));
}

#[test]
fn reordered_chunks_with_rewritten_indexes_fail_authentication() {
    let key = key(1);
    let groups = small_groups();
    let bytes = write_groups(&key, 4, &groups);
    let mut swapped = swap_chunks(&bytes, 1, 3);
    set_chunk_index(&mut swapped, 1, 1);
    set_chunk_index(&mut swapped, 3, 3);
    let (frames, err) = read_all(&swapped, &key, RECORDING, 4);
    assert_eq!(frames, groups[0]);
    assert!(matches!(err, Some(SegmentError::Tampered { chunk: 1 })));
}

#[test]
fn a_chunk_moved_from_another_segment_of_the_recording_fails_authentication() {
    let key = key(1);
    let groups = small_groups();
    let four = write_groups(&key, 4, &groups);
    let five = write_groups(&key, 5, &groups);
    let (ends4, ends5) = (chunk_ends(&four), chunk_ends(&five));
    // Chunk 1 of segment 5 holds the same frames at the same place, but may not stand in.
    let spliced = [&four[..ends4[0]], &five[ends5[0]..ends5[1]], &four[ends4[1]..]].concat();
    let (frames, err) = read_all(&spliced, &key, RECORDING, 4);
    assert_eq!(frames, groups[0]);
    assert!(matches!(err, Some(SegmentError::Tampered { chunk: 1 })));
}

#[test]
fn bytes_after_the_final_chunk_are_an_error() {
    let key = key(1);
    let groups = small_groups();
    let mut bytes = write_groups(&key, 4, &groups);
    bytes.push(0);
    let (frames, err) = read_all(&bytes, &key, RECORDING, 4);
    assert_eq!(frames, groups.concat());
    assert!(matches!(err, Some(SegmentError::TrailingData)));
}

#[test]
fn an_oversized_chunk_length_is_refused_before_allocating() {
    let key = key(1);
    let mut bytes = write_groups(&key, 4, &small_groups());
    bytes[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    let (_, err) = read_all(&bytes, &key, RECORDING, 4);
    assert!(matches!(
        err,
        Some(SegmentError::TooLarge { chunk: 0, len }) if len == u64::from(u32::MAX)
    ));
    assert!(MAX_CHUNK_LEN < u32::MAX as usize);
}

#[test]
fn another_recording_segment_or_key_is_refused_up_front() {
    let key_a = key(1);
    let key_b = key(2);
    let bytes = write_groups(&key_a, 4, &small_groups());

    let (frames, err) = read_all(&bytes, &key_a, OTHER_RECORDING, 4);
    assert!(frames.is_empty());
    assert!(matches!(
        err,
        Some(SegmentError::WrongRecording {
            expected: OTHER_RECORDING,
            found: RECORDING
        })
    ));

    let (frames, err) = read_all(&bytes, &key_a, RECORDING, 5);
    assert!(frames.is_empty());
    assert!(matches!(
        err,
        Some(SegmentError::WrongSegment {
            expected: 5,
            found: 4
        })
    ));

    // Recording B's key on recording A's segment.
    let (frames, err) = read_all(&bytes, &key_b, RECORDING, 4);
    assert!(frames.is_empty());
    assert!(matches!(err, Some(SegmentError::WrongKey)));
    assert!(
        err.unwrap().to_string().contains("wrong data key"),
        "the message names the likely cause"
    );
}

#[test]
fn a_key_unwrapped_for_another_recording_never_reads_its_segments() {
    let mut rng = StdRng::seed_from_u64(3);
    let master = MasterKey::from_bytes([7; 32]);
    let key_a = DataKey::generate(&mut rng);
    let wrapped_a = key_a.wrap(&master, RECORDING, &mut rng);
    let bytes = write_groups(&key_a, 4, &small_groups());

    assert!(wrapped_a.unwrap(&master, OTHER_RECORDING).is_err());
    assert!(
        wrapped_a
            .unwrap(&MasterKey::from_bytes([8; 32]), RECORDING)
            .is_err()
    );
    let unwrapped = wrapped_a.unwrap(&master, RECORDING).unwrap();
    let (frames, err) = read_all(&bytes, &unwrapped, RECORDING, 4);
    assert_eq!(frames, small_groups().concat());
    assert!(err.is_none());
}

#[test]
fn other_files_are_not_segments() {
    let key = key(1);
    let (_, err) = read_all(b"OggS\0\x02 this is an Opus file", &key, RECORDING, 0);
    assert!(matches!(err, Some(SegmentError::NotASegment)));
    // A segment of version 1, whose frames did not name their senders, is not read as one.
    let mut version_1 = write_groups(&key, 0, &small_groups());
    version_1[..8].copy_from_slice(b"CFDSEG01");
    let (_, err) = read_all(&version_1, &key, RECORDING, 0);
    assert!(matches!(err, Some(SegmentError::NotASegment)), "{err:?}");
    // An empty or half-written header is what a crash right after creating the file leaves.
    for partial in [&b""[..], b"CFD", b"CFDSEG02\x01\x90"] {
        let (_, err) = read_all(partial, &key, RECORDING, 0);
        assert!(
            matches!(err, Some(SegmentError::Truncated { intact_chunks: 0 })),
            "{err:?}"
        );
    }
}

#[test]
fn sealed_frames_are_readable_from_the_file_while_the_writer_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg-0");
    let key = key(1);
    let frames = call_frames(120, 2);
    let mut writer = SegmentWriter::create(&path, &key, header(0)).unwrap();

    // Two seconds of a call, ticking every 20 ms as frames arrive.
    for (i, f) in frames[..100].iter().enumerate() {
        writer.push(f.sender, f).unwrap();
        writer.tick(START_MS + i as u64 * 20).unwrap();
    }
    // Sealed at 500, 1000 and 1500 ms: frames 0..=25, 26..=50 and 51..=75. The rest waits in
    // memory, as a `kill -9` now would lose it. Sealed chunks are already in the file.
    let read_now = || {
        let mut frames = Vec::new();
        let reader = SegmentReader::open(&path, &key, RECORDING, 0).unwrap();
        for item in reader {
            match item {
                Ok(f) => frames.push(f),
                Err(e) => return (frames, Some(e)),
            }
        }
        (frames, None)
    };
    let (read, err) = read_now();
    assert_eq!(read, frames[..76]);
    assert!(matches!(err, Some(SegmentError::Truncated { intact_chunks: 3 })));

    for f in &frames[100..] {
        writer.push(f.sender, f).unwrap();
    }
    writer.finish().unwrap();
    let (read, err) = read_now();
    assert_eq!(read, frames);
    assert!(err.is_none(), "{err:?}");
}

#[test]
fn creating_a_segment_never_overwrites_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg-0");
    let key = key(1);
    SegmentWriter::create(&path, &key, header(0))
        .unwrap()
        .finish()
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = SegmentWriter::create(&path, &key, header(0)).err().unwrap();
    assert!(
        matches!(&err, WriteError::Io(e) if e.kind() == io::ErrorKind::AlreadyExists),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_chunk_is_sealed_by_size_without_any_tick() {
    let key = key(1);
    let big = frame(Track::Video, 0, true, vec![1; 1000]);
    let sink = SharedSink::default();
    let mut writer = SegmentWriter::new(sink.clone(), &key, header(0)).unwrap();
    // Each frame takes 1000 bytes plus a 15-byte record head; the first also names its sender
    // in 18 bytes.
    let per_chunk = (SEAL_BYTES - 18).div_ceil(1015);
    for _ in 0..per_chunk + 3 {
        writer.push(big.sender, &big).unwrap();
    }
    writer.flush().unwrap();
    let (read, err) = read_all(&sink.bytes(), &key, RECORDING, 0);
    assert_eq!(read.len(), per_chunk);
    assert!(matches!(err, Some(SegmentError::Truncated { intact_chunks: 1 })));
}

#[test]
fn ticks_seal_only_once_the_interval_has_passed() {
    let key = key(1);
    let frames = call_frames(4, 3);
    let sink = SharedSink::default();
    let mut writer = SegmentWriter::new(sink.clone(), &key, header(0)).unwrap();
    writer.push(frames[0].sender, &frames[0]).unwrap();
    writer.tick(START_MS + SEAL_INTERVAL_MS - 1).unwrap();
    writer.flush().unwrap();
    assert_eq!(sink.bytes().len(), HEADER_LEN, "sealed too early");
    writer.tick(START_MS + SEAL_INTERVAL_MS).unwrap();
    writer.flush().unwrap();
    let (read, err) = read_all(&sink.bytes(), &key, RECORDING, 0);
    assert_eq!(read, frames[..1]);
    assert!(matches!(err, Some(SegmentError::Truncated { intact_chunks: 1 })));
    // An empty buffer seals nothing, however late.
    writer.tick(START_MS + 10 * SEAL_INTERVAL_MS).unwrap();
    writer.flush().unwrap();
    assert_eq!(chunk_ends(&sink.bytes()).len(), 1);
    // A clock that went back a long way seals rather than waiting for it to catch up.
    writer.push(frames[1].sender, &frames[1]).unwrap();
    writer.tick(START_MS - 60_000).unwrap();
    writer.flush().unwrap();
    assert_eq!(chunk_ends(&sink.bytes()).len(), 2);
}

#[test]
fn a_failed_write_stops_the_writer_and_leaves_a_readable_prefix() {
    let key = key(1);
    let frames = call_frames(10, 4);
    let sink = SharedSink::default();
    let mut writer = SegmentWriter::new(sink.clone(), &key, header(0)).unwrap();
    writer.push(frames[0].sender, &frames[0]).unwrap();
    writer.tick(START_MS + SEAL_INTERVAL_MS).unwrap();
    writer.flush().unwrap();
    // The disk fills up part-way through the next chunk, which is written as it is sealed.
    sink.fail_after(5);
    writer.push(frames[1].sender, &frames[1]).unwrap();
    let err = writer.tick(START_MS + 2 * SEAL_INTERVAL_MS).unwrap_err();
    assert!(matches!(err, WriteError::Io(_)), "{err}");
    assert!(matches!(writer.flush(), Err(WriteError::Failed)));
    assert!(matches!(
        writer.push(frames[2].sender, &frames[2]),
        Err(WriteError::Failed)
    ));
    assert!(matches!(writer.tick(START_MS + 9_000), Err(WriteError::Failed)));
    assert!(matches!(writer.finish(), Err(WriteError::Failed)));

    let (read, err) = read_all(&sink.bytes(), &key, RECORDING, 0);
    assert_eq!(read, frames[..1]);
    assert!(matches!(err, Some(SegmentError::Truncated { intact_chunks: 1 })));
}

#[test]
fn an_oversized_frame_is_refused_and_the_writer_goes_on() {
    let key = key(1);
    let mut writer = SegmentWriter::new(Vec::new(), &key, header(0)).unwrap();
    let huge = frame(Track::Video, 0, true, vec![0; MAX_FRAME_LEN + 1]);
    assert!(matches!(
        writer.push(huge.sender, &huge),
        Err(WriteError::FrameTooLarge { len }) if len == MAX_FRAME_LEN + 1
    ));
    // The largest allowed frame fits a chunk by a compile-time check; writing one here would
    // only make the test slow.
    let next = frame(Track::Audio, 1, false, vec![3; 100]);
    writer.push(next.sender, &next).unwrap();
    let bytes = writer.finish().unwrap();
    let (read, err) = read_all(&bytes, &key, RECORDING, 0);
    assert_eq!(read, [next]);
    assert!(err.is_none());
}

/// A sink the test can look into while the writer holds it, and make fail.
#[derive(Clone, Default)]
struct SharedSink(std::sync::Arc<std::sync::Mutex<SharedInner>>);

#[derive(Default)]
struct SharedInner {
    bytes: Vec<u8>,
    /// Bytes still accepted before writes fail, once set.
    budget: Option<usize>,
}

impl SharedSink {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().bytes.clone()
    }

    fn fail_after(&self, bytes: usize) {
        self.0.lock().unwrap().budget = Some(bytes);
    }
}

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut inner = self.0.lock().unwrap();
        let n = match inner.budget {
            Some(0) => return Err(io::Error::other("disk full")),
            Some(budget) => budget.min(buf.len()),
            None => buf.len(),
        };
        if let Some(budget) = &mut inner.budget {
            *budget -= n;
        }
        inner.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for SharedSink {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Every sender comes back with their own frames, in a segment that names the most senders it can;
/// one more is refused without harm to the segment.
#[test]
fn each_frame_comes_back_with_its_sender_and_senders_are_bounded() {
    let key = key(1);
    let frames: Vec<_> = (0..MAX_SENDERS as u128 * 2)
        .map(|i| {
            let sender = ParticipantId(Uuid::from_u128(0xbeef_0000 + i % MAX_SENDERS as u128));
            frame_from(sender, Track::Audio, i as u64, false, i.to_be_bytes().to_vec())
        })
        .collect();
    let mut writer = SegmentWriter::new(Vec::new(), &key, header(0)).unwrap();
    for f in &frames {
        writer.push(f.sender, f).unwrap();
    }
    let stranger = frame_from(PEOPLE[2], Track::Video, 9, true, vec![9]);
    assert!(matches!(
        writer.push(stranger.sender, &stranger),
        Err(WriteError::TooManySenders)
    ));
    let bytes = writer.finish().unwrap();
    let (read, err) = read_all(&bytes, &key, RECORDING, 0);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(read, frames);
}

/// A sink whose power-loss sync runs in the background and takes as long as the test wants, or
/// fails: like a disk busy with other work.
#[derive(Clone, Default)]
struct SlowSyncSink {
    inner: SharedSink,
    released: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fail: bool,
}

impl Write for SlowSyncSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for SlowSyncSink {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn background_sync(&self) -> io::Result<Option<confide_media::segment::BackgroundSync>> {
        let released = self.released.clone();
        let fail = self.fail;
        Ok(Some(confide_media::segment::BackgroundSync::new(move || {
            while !released.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if fail {
                Err(io::Error::other("sync failed"))
            } else {
                Ok(())
            }
        })))
    }
}

/// A kill loses only what was not yet sealed: a sync that hangs does not hold back the next
/// chunks from being written.
#[test]
fn a_slow_sync_never_delays_writing_sealed_chunks() {
    let key = key(1);
    let frames = call_frames(10, 4);
    let sink = SlowSyncSink::default();
    let mut writer = SegmentWriter::new(sink.clone(), &key, header(0)).unwrap();
    for (i, frame) in frames.iter().take(3).enumerate() {
        writer.push(frame.sender, frame).unwrap();
        writer.tick(START_MS + (i as u64 + 1) * SEAL_INTERVAL_MS).unwrap();
    }
    assert_eq!(chunk_ends(&sink.inner.bytes()).len(), 3);
    let (read, err) = read_all(&sink.inner.bytes(), &key, RECORDING, 0);
    assert_eq!(read, frames[..3]);
    assert!(matches!(err, Some(SegmentError::Truncated { intact_chunks: 3 })));
    sink.released.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.finish().unwrap();
}

/// A background sync that fails stops the writer at its next call.
#[test]
fn a_failed_background_sync_stops_the_writer() {
    let key = key(1);
    let frames = call_frames(10, 4);
    let sink = SlowSyncSink {
        fail: true,
        ..SlowSyncSink::default()
    };
    sink.released.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut writer = SegmentWriter::new(sink.clone(), &key, header(0)).unwrap();
    writer.push(frames[0].sender, &frames[0]).unwrap();
    writer.tick(START_MS + SEAL_INTERVAL_MS).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let err = loop {
        match writer.push(frames[1].sender, &frames[1]) {
            Err(err) => break err,
            Ok(()) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Ok(()) => panic!("the failed sync was never reported"),
        }
    };
    assert!(matches!(err, WriteError::Io(_)), "{err}");
    assert!(matches!(writer.finish(), Err(WriteError::Failed)));
}
