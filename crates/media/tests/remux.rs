//! Remuxing recordings into WebM, checked with a strict reader written here from the Matroska
//! spec and with an independent demuxer (`matroska-demuxer`).

use std::convert::Infallible;
use std::io::{self, Cursor, Seek, SeekFrom, Write};

use bytes::Bytes;
use confide_media::remux::{
    CLUSTER_SPAN_MS, FrameSize, Include, MAX_TRACKS, REORDER_WINDOW_US, RemuxError, RemuxOptions,
    RemuxSummary, TrackKey, WebmError, WebmWriter, remux_segments, remux_segments_with,
};
use confide_media::segment::SEAL_INTERVAL_MS;
use confide_media::sfu::ParticipantId;
use confide_media::{
    DataKey, Frame, SegmentError, SegmentHeader, SegmentReader, SegmentWriter, StoredFrame, Track,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// Recording time is some clock far from 0; the file must start at 0 anyway.
const CLOCK_US: u64 = 1_750_000_000_000_000;
const OPUS_FRAME_US: u64 = 20_000;
/// The people of a call, in id order: the patient, the clinician and an interpreter. Synthetic
/// frames end with their sender's index here, so a block shows whose it is.
const PEOPLE: [ParticipantId; 3] = [
    ParticipantId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a01)),
    ParticipantId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a02)),
    ParticipantId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a03)),
];

// ---------------------------------------------------------------------------------------------
// Synthetic recordings

fn vp8_keyframe(rng: &mut StdRng, (width, height): (u16, u16)) -> Vec<u8> {
    let len = rng.random_range(10..400);
    let mut frame: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    // Frame tag: keyframe (bit 0 clear), version 0, shown; then the start code and the size.
    frame[..3].copy_from_slice(&[0x10, 0x02, 0x00]);
    frame[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
    frame[6..8].copy_from_slice(&width.to_le_bytes());
    frame[8..10].copy_from_slice(&height.to_le_bytes());
    frame
}

fn vp8_interframe(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.random_range(1..200);
    let mut frame: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    frame[0] |= 1;
    frame
}

/// A 20 ms Opus packet (hybrid fullband, one frame).
fn opus(rng: &mut StdRng, stereo: bool) -> Vec<u8> {
    let len = rng.random_range(1..80);
    let mut packet: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    packet[0] = (15 << 3) | if stereo { 0x04 } else { 0 };
    packet
}

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

#[derive(Clone, Debug)]
struct VideoSpec {
    size: (u16, u16),
    interval_us: u64,
    /// Interframes before the segment's first keyframe.
    leading_interframes: usize,
    keyframe_every: usize,
    /// Each video frame is stored up to this long after its time, as if it waited on
    /// retransmissions while audio kept being stored.
    max_lag_us: u64,
}

#[derive(Clone, Debug)]
struct SegmentSpec {
    start_ms: u64,
    end_ms: u64,
    /// `Some(stereo)` for a segment with audio.
    audio: Option<bool>,
    video: Option<VideoSpec>,
}

/// What one person sends in one segment, with when each frame is stored: audio every 20 ms,
/// video at its interval, each in time order. Every payload ends with the person's index.
fn segment_frames(spec: &SegmentSpec, who: usize, rng: &mut StdRng) -> Vec<(u64, StoredFrame)> {
    let start_us = CLOCK_US + spec.start_ms * 1000;
    let end_us = CLOCK_US + spec.end_ms * 1000;
    let mut stored: Vec<(u64, StoredFrame)> = Vec::new();
    if let Some(stereo) = spec.audio {
        for ts in (start_us..end_us).step_by(OPUS_FRAME_US as usize) {
            let mut packet = opus(rng, stereo);
            packet.push(who as u8);
            stored.push((ts, frame_from(PEOPLE[who], Track::Audio, ts, true, packet)));
        }
    }
    if let Some(video) = &spec.video {
        let mut stored_at = 0;
        // Video starts a little after audio, as a camera does.
        for (i, ts) in (start_us + 7_000..end_us)
            .step_by(video.interval_us as usize)
            .enumerate()
        {
            let key = i >= video.leading_interframes
                && (i - video.leading_interframes).is_multiple_of(video.keyframe_every);
            let mut payload = if key {
                vp8_keyframe(rng, video.size)
            } else {
                vp8_interframe(rng)
            };
            payload.push(who as u8);
            stored_at = (ts + rng.random_range(0..=video.max_lag_us)).max(stored_at);
            stored.push((stored_at, frame_from(PEOPLE[who], Track::Video, ts, key, payload)));
        }
    }
    stored
}

/// The patient's recording, segment by segment.
fn recording(specs: &[SegmentSpec], seed: u64) -> Vec<Vec<StoredFrame>> {
    recording_of(&[specs], seed)
}

/// `people[i]` is what `PEOPLE[i]` sends in each segment; each segment's frames are in the order
/// they were stored, everyone's interleaved.
fn recording_of(people: &[&[SegmentSpec]], seed: u64) -> Vec<Vec<StoredFrame>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let segments = people.iter().map(|specs| specs.len()).max().unwrap_or(0);
    (0..segments)
        .map(|segment| {
            let mut stored: Vec<(u64, StoredFrame)> = Vec::new();
            for (who, specs) in people.iter().enumerate() {
                if let Some(spec) = specs.get(segment) {
                    stored.extend(segment_frames(spec, who, &mut rng));
                }
            }
            stored.sort_by_key(|(at, _)| *at);
            stored.into_iter().map(|(_, f)| f).collect()
        })
        .collect()
}

/// A segment in which this person sends nothing.
fn silent(start_ms: u64, end_ms: u64) -> SegmentSpec {
    SegmentSpec {
        start_ms,
        end_ms,
        audio: None,
        video: None,
    }
}

/// Segments as `remux_segments` takes them from a source that cannot fail.
fn infallible(
    segments: &[Vec<StoredFrame>],
) -> Vec<Result<Vec<Result<StoredFrame, Infallible>>, Infallible>> {
    segments
        .iter()
        .map(|segment| Ok(segment.iter().cloned().map(Ok).collect()))
        .collect()
}

fn remux(segments: &[Vec<StoredFrame>]) -> (Vec<u8>, RemuxSummary) {
    let mut out = Cursor::new(Vec::new());
    let summary = remux_segments(infallible(segments), &mut out).unwrap();
    (out.into_inner(), summary)
}

// ---------------------------------------------------------------------------------------------
// What the file must hold

#[derive(Clone, Debug, PartialEq, Eq)]
struct Block {
    track: u64,
    time_ms: u64,
    keyframe: bool,
    payload: Vec<u8>,
}

struct Expected {
    blocks: Vec<Block>,
    dropped: u64,
    /// From the earliest frame kept to the end of the last frame: the call's length.
    call_ms: f64,
    start_us: u64,
    /// In number order.
    tracks: Vec<ExpectedTrack>,
}

#[derive(Debug)]
struct ExpectedTrack {
    key: TrackKey,
    /// Video: the first keyframe's size.
    video_size: Option<(u16, u16)>,
    /// Audio: 2 if any packet is stereo.
    channels: Option<u8>,
    frames: u64,
}

fn is_vp8_keyframe(payload: &[u8]) -> bool {
    payload.len() >= 10 && payload[0] & 1 == 0 && payload[3..6] == [0x9d, 0x01, 0x2a]
}

/// Worked out from the frames directly: the tracks `options` picks, each sender's video of a
/// segment from their first keyframe in it, every frame in time order (video first on a tie,
/// then the lower participant id), tracks numbered in the order they first play, times in ms
/// from the first frame kept.
fn expected(segments: &[Vec<StoredFrame>], options: RemuxOptions) -> Expected {
    let admits = |include: Include, who| match include {
        Include::Everyone => true,
        Include::Only(only) => only == who,
        Include::Nobody => false,
    };
    let mut kept = Vec::new();
    let mut dropped = 0;
    for segment in segments {
        let mut started = Vec::new();
        for f in segment {
            let include = match f.track {
                Track::Audio => options.audio_of,
                Track::Video => options.video_of,
            };
            if !admits(include, f.sender) {
                continue;
            }
            if f.track == Track::Video && !started.contains(&f.sender) {
                if !is_vp8_keyframe(&f.payload) {
                    dropped += 1;
                    continue;
                }
                started.push(f.sender);
            }
            kept.push(f.clone());
        }
    }
    kept.sort_by_key(|f| (f.timestamp_us, f.track == Track::Audio, f.sender));
    let origin = kept.first().map_or(0, |f| f.timestamp_us);
    let end = kept
        .iter()
        .map(|f| f.timestamp_us + if f.track == Track::Audio { OPUS_FRAME_US } else { 0 })
        .max()
        .unwrap_or(origin);
    let mut tracks: Vec<ExpectedTrack> = Vec::new();
    let mut blocks = Vec::new();
    for f in &kept {
        let key = TrackKey {
            participant: f.sender,
            kind: f.track,
        };
        let index = match tracks.iter().position(|t| t.key == key) {
            Some(index) => index,
            None => {
                tracks.push(ExpectedTrack {
                    key,
                    video_size: (f.track == Track::Video).then(|| {
                        let p = &f.payload;
                        (u16::from_le_bytes([p[6], p[7]]), u16::from_le_bytes([p[8], p[9]]))
                    }),
                    channels: (f.track == Track::Audio).then_some(1),
                    frames: 0,
                });
                tracks.len() - 1
            }
        };
        let track = &mut tracks[index];
        track.frames += 1;
        if f.track == Track::Audio && f.payload[0] & 4 != 0 {
            track.channels = Some(2);
        }
        blocks.push(Block {
            track: index as u64 + 1,
            time_ms: (f.timestamp_us - origin + 500) / 1000,
            keyframe: f.track == Track::Audio || is_vp8_keyframe(&f.payload),
            payload: f.payload.to_vec(),
        });
    }
    Expected {
        blocks,
        dropped,
        call_ms: (end - origin) as f64 / 1000.0,
        start_us: origin,
        tracks,
    }
}

// ---------------------------------------------------------------------------------------------
// A strict WebM reader: every size must add up, every element must be one we wrote on purpose.

mod webm {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const INFO: u32 = 0x1549_A966;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const VOID: u32 = 0xEC;

    pub struct Element<'a> {
        pub id: u32,
        /// Where the element starts, from the start of the buffer it was read from.
        pub at: usize,
        pub data: &'a [u8],
    }

    fn vint(buf: &[u8], at: usize) -> (u64, usize) {
        let first = buf[at];
        assert_ne!(first, 0, "vint longer than 8 bytes at {at}");
        let len = first.leading_zeros() as usize + 1;
        let mut value = u64::from(first);
        for &b in &buf[at + 1..at + len] {
            value = value << 8 | u64::from(b);
        }
        (value, len)
    }

    /// The elements that exactly fill `buf[from..to]`.
    pub fn children(buf: &[u8], from: usize, to: usize) -> Vec<Element<'_>> {
        let mut out = Vec::new();
        let mut at = from;
        while at < to {
            let (id, id_len) = vint(buf, at);
            assert!(id_len <= 4, "id too long at {at}");
            let (size, size_len) = vint(buf, at + id_len);
            let size = size & !(1 << (7 * size_len));
            assert_ne!(size, (1 << (7 * size_len)) - 1, "unknown size at {at}");
            let start = at + id_len + size_len;
            let end = start + size as usize;
            assert!(end <= to, "element {id:x} at {at} overruns its parent");
            out.push(Element {
                id: id as u32,
                at,
                data: &buf[start..end],
            });
            at = end;
        }
        out
    }

    /// A master's children, positioned within its data.
    pub fn of<'a>(element: &Element<'a>) -> Vec<Element<'a>> {
        children(element.data, 0, element.data.len())
    }

    pub fn uint(data: &[u8]) -> u64 {
        assert!((1..=8).contains(&data.len()));
        data.iter().fold(0, |v, &b| v << 8 | u64::from(b))
    }

    pub fn float(data: &[u8]) -> f64 {
        f64::from_be_bytes(data.try_into().expect("8-byte float"))
    }

    pub fn one<'a>(elements: &'a [Element<'_>], id: u32) -> &'a [u8] {
        let found: Vec<_> = elements.iter().filter(|e| e.id == id).collect();
        assert_eq!(found.len(), 1, "want exactly one {id:x}");
        found[0].data
    }
}

#[derive(Debug, PartialEq)]
struct TrackInfo {
    number: u64,
    kind: u64,
    name: String,
    codec: String,
    private: Option<Vec<u8>>,
    codec_delay_ns: Option<u64>,
    seek_pre_roll_ns: Option<u64>,
    /// (width, height) for video, (sampling rate, channels) for audio.
    video_size: Option<(u64, u64)>,
    audio: Option<(f64, u64)>,
}

struct Cluster {
    /// From the start of the segment's data.
    position: u64,
    time_ms: u64,
    blocks: Vec<Block>,
}

struct Parsed {
    duration_ms: f64,
    tracks: Vec<TrackInfo>,
    voids_after_tracks: usize,
    clusters: Vec<Cluster>,
    /// (time, track, cluster position)
    cues: Vec<(u64, u64, u64)>,
}

impl Parsed {
    fn blocks(&self) -> Vec<Block> {
        self.clusters.iter().flat_map(|c| c.blocks.clone()).collect()
    }
}

fn parse(file: &[u8]) -> Parsed {
    use webm::*;
    let top = children(file, 0, file.len());
    assert_eq!(
        top.iter().map(|e| e.id).collect::<Vec<_>>(),
        [EBML, SEGMENT],
        "top level"
    );

    let header = of(&top[0]);
    assert_eq!(
        header.iter().map(|e| e.id).collect::<Vec<_>>(),
        [0x4286, 0x42F7, 0x42F2, 0x42F3, 0x4282, 0x4287, 0x4285]
    );
    assert_eq!(uint(one(&header, 0x4286)), 1, "EBMLVersion");
    assert_eq!(uint(one(&header, 0x42F7)), 1, "EBMLReadVersion");
    assert_eq!(uint(one(&header, 0x42F2)), 4, "EBMLMaxIDLength");
    assert_eq!(uint(one(&header, 0x42F3)), 8, "EBMLMaxSizeLength");
    assert_eq!(one(&header, 0x4282), b"webm", "DocType");
    assert_eq!(
        uint(one(&header, 0x4287)),
        4,
        "DocTypeVersion: CodecDelay and SeekPreRoll are v4"
    );
    assert_eq!(
        uint(one(&header, 0x4285)),
        2,
        "DocTypeReadVersion: SimpleBlock is v2"
    );

    let segment = of(&top[1]);
    let ids: Vec<_> = segment.iter().map(|e| e.id).collect();
    assert!(ids.len() >= 5, "{ids:x?}");
    assert_eq!(ids[..3], [SEEK_HEAD, INFO, TRACKS]);
    // Room left for tracks the file does not have.
    let voids_after_tracks = usize::from(ids[3] == VOID);
    if voids_after_tracks == 1 {
        assert!(segment[3].data.iter().all(|&b| b == 0));
    }
    assert_eq!(ids[ids.len() - 1], CUES);
    assert!(
        ids[3 + voids_after_tracks..ids.len() - 1]
            .iter()
            .all(|&id| id == CLUSTER),
        "{ids:x?}"
    );

    // The SeekHead points exactly at Info, Tracks and Cues.
    let seeks: Vec<_> = of(&segment[0])
        .iter()
        .map(|seek| {
            assert_eq!(seek.id, 0x4DBB);
            let fields = of(seek);
            (uint(one(&fields, 0x53AB)) as u32, uint(one(&fields, 0x53AC)))
        })
        .collect();
    let position_of = |id| segment.iter().find(|e| e.id == id).unwrap().at as u64;
    assert_eq!(
        seeks,
        [
            (INFO, position_of(INFO)),
            (TRACKS, position_of(TRACKS)),
            (CUES, position_of(CUES))
        ]
    );

    let info = of(&segment[1]);
    assert_eq!(
        info.iter().map(|e| e.id).collect::<Vec<_>>(),
        [0x2AD7B1, 0x4489, 0x4D80, 0x5741]
    );
    assert_eq!(uint(one(&info, 0x2AD7B1)), 1_000_000, "TimestampScale: 1 ms");
    assert_eq!(one(&info, 0x4D80), b"Confide");
    assert_eq!(one(&info, 0x5741), b"Confide");
    let duration_ms = float(one(&info, 0x4489));

    let mut tracks = Vec::new();
    for entry in of(&segment[2]) {
        assert_eq!(entry.id, 0xAE, "TrackEntry");
        let fields = of(&entry);
        let find = |id| fields.iter().find(|e| e.id == id).map(|e| e.data);
        assert_eq!(uint(one(&fields, 0x73C5)), uint(one(&fields, 0xD7)), "TrackUID");
        assert_eq!(uint(one(&fields, 0x9C)), 0, "FlagLacing");
        tracks.push(TrackInfo {
            number: uint(one(&fields, 0xD7)),
            kind: uint(one(&fields, 0x83)),
            name: String::from_utf8(one(&fields, 0x536E).to_vec()).unwrap(),
            codec: String::from_utf8(one(&fields, 0x86).to_vec()).unwrap(),
            private: find(0x63A2).map(<[u8]>::to_vec),
            codec_delay_ns: find(0x56AA).map(uint),
            seek_pre_roll_ns: find(0x56BB).map(uint),
            video_size: find(0xE0).map(|video| {
                let video = children(video, 0, video.len());
                (uint(one(&video, 0xB0)), uint(one(&video, 0xBA)))
            }),
            audio: find(0xE1).map(|audio| {
                let audio = children(audio, 0, audio.len());
                (float(one(&audio, 0xB5)), uint(one(&audio, 0x9F)))
            }),
        });
    }

    let mut clusters = Vec::new();
    for element in segment.iter().filter(|e| e.id == CLUSTER) {
        let fields = of(element);
        assert_eq!(fields[0].id, 0xE7, "a cluster starts with its Timestamp");
        let time_ms = uint(fields[0].data);
        let blocks: Vec<_> = fields[1..]
            .iter()
            .map(|block| {
                assert_eq!(block.id, 0xA3, "SimpleBlock");
                let d = block.data;
                assert!(
                    (0x81..=0x80 + MAX_TRACKS as u8).contains(&d[0]),
                    "track number {:x}",
                    d[0]
                );
                let relative = i16::from_be_bytes([d[1], d[2]]);
                assert!(relative >= 0, "blocks come in time order");
                assert_eq!(
                    d[3] & 0x7f,
                    0,
                    "only the keyframe flag: no lacing, invisible or discardable"
                );
                Block {
                    track: u64::from(d[0] & 0x7f),
                    time_ms: time_ms + relative as u64,
                    keyframe: d[3] & 0x80 != 0,
                    payload: d[4..].to_vec(),
                }
            })
            .collect();
        assert!(!blocks.is_empty(), "empty cluster");
        assert_eq!(
            blocks[0].time_ms, time_ms,
            "a cluster's time is its first block's"
        );
        clusters.push(Cluster {
            position: element.at as u64,
            time_ms,
            blocks,
        });
    }

    let cues = of(segment.last().unwrap())
        .iter()
        .map(|point| {
            assert_eq!(point.id, 0xBB, "CuePoint");
            let fields = of(point);
            let positions = of(&fields[1]);
            assert_eq!((fields.len(), fields[1].id), (2, 0xB7));
            (
                uint(one(&fields, 0xB3)),
                uint(one(&positions, 0xF7)),
                uint(one(&positions, 0xF1)),
            )
        })
        .collect();

    Parsed {
        duration_ms,
        tracks,
        voids_after_tracks,
        clusters,
        cues,
    }
}

fn opus_head(channels: u8) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, channels]);
    head.extend_from_slice(&312u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&[0, 0, 0]);
    head
}

impl Parsed {
    fn is_video(&self, track: u64) -> bool {
        self.tracks.iter().any(|t| t.number == track && t.kind == 1)
    }

    /// The number of `who`'s track of `kind`, from the track names.
    fn track_of(&self, who: ParticipantId, kind: Track) -> Option<u64> {
        let name = track_name(TrackKey {
            participant: who,
            kind,
        });
        self.tracks.iter().find(|t| t.name == name).map(|t| t.number)
    }
}

fn track_name(key: TrackKey) -> String {
    let kind = match key.kind {
        Track::Audio => "audio",
        Track::Video => "video",
    };
    format!("{} {kind}", key.participant.0)
}

/// Everything the file must say about `segments`, read both ways.
fn check(segments: &[Vec<StoredFrame>], file: &[u8], summary: &RemuxSummary) -> Parsed {
    check_with(segments, RemuxOptions::default(), file, summary)
}

fn check_with(
    segments: &[Vec<StoredFrame>],
    options: RemuxOptions,
    file: &[u8],
    summary: &RemuxSummary,
) -> Parsed {
    let want = expected(segments, options);
    let parsed = parse(file);

    let blocks = parsed.blocks();
    assert_eq!(blocks.len(), want.blocks.len(), "block count");
    for (i, (got, want)) in blocks.iter().zip(&want.blocks).enumerate() {
        assert_eq!(got, want, "block {i}");
    }
    let video_frames = blocks.iter().filter(|b| parsed.is_video(b.track)).count() as u64;
    assert_eq!(summary.video_frames, video_frames);
    assert_eq!(summary.audio_frames, want.blocks.len() as u64 - video_frames);
    assert_eq!(summary.dropped_video_frames, want.dropped);
    assert_eq!(summary.start_us, want.start_us);
    let size = |(width, height)| FrameSize { width, height };
    assert_eq!(
        summary.video_size,
        want.tracks.iter().find_map(|t| t.video_size).map(size)
    );
    let summarised: Vec<_> = summary
        .tracks
        .iter()
        .map(|t| (u64::from(t.number), t.key, t.frames, t.video_size, t.channels))
        .collect();
    let wanted: Vec<_> = (1..)
        .zip(&want.tracks)
        .map(|(n, t)| (n, t.key, t.frames, t.video_size.map(size), t.channels))
        .collect();
    assert_eq!(summarised, wanted);

    // The length is the call's, gaps included, within one frame (a video frame at most 100 ms).
    assert!(
        (parsed.duration_ms - want.call_ms).abs() <= 100.0,
        "duration {} for a {} ms call",
        parsed.duration_ms,
        want.call_ms
    );
    assert_eq!(summary.duration_ms, parsed.duration_ms.round() as u64);

    let tracks: Vec<_> = (1..)
        .zip(&want.tracks)
        .map(|(number, t)| match t.key.kind {
            Track::Video => {
                let (width, height) = t.video_size.unwrap();
                TrackInfo {
                    number,
                    kind: 1,
                    name: track_name(t.key),
                    codec: "V_VP8".into(),
                    private: None,
                    codec_delay_ns: None,
                    seek_pre_roll_ns: None,
                    video_size: Some((width.into(), height.into())),
                    audio: None,
                }
            }
            Track::Audio => {
                let channels = t.channels.unwrap();
                TrackInfo {
                    number,
                    kind: 2,
                    name: track_name(t.key),
                    codec: "A_OPUS".into(),
                    private: Some(opus_head(channels)),
                    codec_delay_ns: Some(6_500_000),
                    seek_pre_roll_ns: Some(80_000_000),
                    video_size: None,
                    audio: Some((48_000.0, channels.into())),
                }
            }
        })
        .collect();
    assert_eq!(parsed.tracks, tracks);
    assert_eq!(parsed.voids_after_tracks, 1, "the room left for tracks");

    // Clusters: a video keyframe always opens one; audio opens one once the cluster is
    // CLUSTER_SPAN_MS old; no cluster outlives a 16-bit relative time.
    for cluster in &parsed.clusters {
        for (i, block) in cluster.blocks.iter().enumerate().skip(1) {
            let age = block.time_ms - cluster.time_ms;
            let video = parsed.is_video(block.track);
            assert!(
                !(video && block.keyframe),
                "keyframe inside a cluster at {}",
                block.time_ms
            );
            assert!(video || age < CLUSTER_SPAN_MS, "audio {i} at age {age}");
            assert!(age <= i16::MAX as u64);
        }
    }
    // Cues: exactly the clusters that open with a keyframe, in time order.
    let cued: Vec<_> = parsed
        .clusters
        .iter()
        .filter(|c| c.blocks[0].keyframe)
        .map(|c| (c.time_ms, c.blocks[0].track, c.position))
        .collect();
    assert_eq!(parsed.cues, cued);
    // In time order, then file order: an audio-opened cluster and a keyframe-opened one may share a
    // millisecond, and then their tracks need not be in any order.
    assert!(
        parsed
            .cues
            .is_sorted_by_key(|&(time, _, position)| (time, position))
    );

    check_with_matroska_demuxer(file, &want, &parsed);
    parsed
}

/// The same file through a demuxer written by someone else.
fn check_with_matroska_demuxer(file: &[u8], want: &Expected, parsed: &Parsed) {
    use matroska_demuxer::{Frame as MkvFrame, MatroskaFile, TrackType};
    let mut mkv = MatroskaFile::open(Cursor::new(file)).unwrap();
    assert_eq!(mkv.ebml_header().doc_type(), "webm");
    assert_eq!(mkv.info().timestamp_scale().get(), 1_000_000);
    assert_eq!(mkv.info().duration(), Some(parsed.duration_ms));
    let kinds: Vec<_> = mkv
        .tracks()
        .iter()
        .map(|t| (t.track_number().get(), t.track_type(), t.codec_id().to_owned()))
        .collect();
    let want_kinds: Vec<_> = (1..)
        .zip(&want.tracks)
        .map(|(n, t)| match t.key.kind {
            Track::Video => (n, TrackType::Video, "V_VP8".to_owned()),
            Track::Audio => (n, TrackType::Audio, "A_OPUS".to_owned()),
        })
        .collect();
    assert_eq!(kinds, want_kinds);
    let names: Vec<_> = mkv.tracks().iter().map(|t| t.name().map(str::to_owned)).collect();
    let want_names: Vec<_> = want.tracks.iter().map(|t| Some(track_name(t.key))).collect();
    assert_eq!(names, want_names);

    let mut got = Vec::new();
    let mut frame = MkvFrame::default();
    while mkv.next_frame(&mut frame).unwrap() {
        got.push(Block {
            track: frame.track,
            time_ms: frame.timestamp,
            keyframe: frame.is_keyframe.unwrap(),
            payload: frame.data.clone(),
        });
    }
    assert!(got == want.blocks, "matroska-demuxer reads other blocks");

    // Seeking to each cue lands on the first block of a cluster at its time. An audio-opened cluster and
    // a keyframe-opened one can share a millisecond; the demuxer then picks either.
    for &(time, _, _) in &parsed.cues {
        mkv.seek(time).unwrap();
        assert!(mkv.next_frame(&mut frame).unwrap());
        assert_eq!(frame.timestamp, time);
        assert!(
            parsed
                .clusters
                .iter()
                .any(|c| c.time_ms == time && c.blocks[0].payload == frame.data),
            "seeking to {time} ms lands on no cluster's first block"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

fn video(size: (u16, u16), leading_interframes: usize) -> VideoSpec {
    VideoSpec {
        size,
        interval_us: 33_333,
        leading_interframes,
        keyframe_every: 60,
        max_lag_us: 150_000,
    }
}

#[test]
fn a_call_with_a_switch_and_a_reconnect_round_trips() {
    let segments = recording(
        &[
            // Audio and video; then the camera is switched off; then the call drops and
            // reconnects after 1.5 s at a higher resolution, its video joining mid-stream.
            SegmentSpec {
                start_ms: 0,
                end_ms: 4_000,
                audio: Some(false),
                video: Some(video((640, 480), 0)),
            },
            SegmentSpec {
                start_ms: 4_000,
                end_ms: 11_000,
                audio: Some(false),
                video: None,
            },
            SegmentSpec {
                start_ms: 12_500,
                end_ms: 15_000,
                audio: Some(false),
                video: Some(video((1280, 720), 3)),
            },
        ],
        1,
    );
    // The stored order really differs from time order, so the merge is exercised.
    let stored: Vec<_> = segments.concat().iter().map(|f| f.timestamp_us).collect();
    assert!(!stored.is_sorted());

    let (file, summary) = remux(&segments);
    let parsed = check(&segments, &file, &summary);
    assert_eq!(summary.dropped_video_frames, 3);
    assert_eq!(
        summary.video_size,
        Some(FrameSize {
            width: 640,
            height: 480
        })
    );
    // Audio ends at 15 s; the last video frame may run one frame interval past it.
    assert!(
        summary.duration_ms.abs_diff(15_000) <= 34,
        "{}",
        summary.duration_ms
    );
    // The reconnect gap is still a gap: nothing between 11.0 s and 12.5 s.
    let blocks = parsed.blocks();
    let audio = parsed.track_of(PEOPLE[0], Track::Audio).unwrap();
    let after_gap = blocks.iter().find(|b| b.time_ms >= 11_000).unwrap();
    assert_eq!((after_gap.time_ms, after_gap.track), (12_500, audio));
    // Audio-only stretches are split every CLUSTER_SPAN_MS and cued on the audio track.
    assert!(
        parsed
            .cues
            .iter()
            .any(|&(time, track, _)| track == audio && time > 4_000 && time < 11_000)
    );
    // The same input gives the same bytes.
    assert!(remux(&segments).0 == file);
}

#[test]
fn an_audio_only_recording_has_no_video_track() {
    let segments = recording(
        &[SegmentSpec {
            start_ms: 0,
            end_ms: 12_000,
            audio: Some(true),
            video: None,
        }],
        2,
    );
    let (file, summary) = remux(&segments);
    let parsed = check(&segments, &file, &summary);
    assert_eq!(summary.video_size, None);
    assert_eq!(parsed.tracks.len(), 1);
    assert_eq!(parsed.tracks[0].audio, Some((48_000.0, 2)));
    assert_eq!(
        parsed.clusters.iter().map(|c| c.time_ms).collect::<Vec<_>>(),
        [0, 5_000, 10_000]
    );
}

#[test]
fn video_that_only_starts_in_a_later_segment_is_declared() {
    let segments = recording(
        &[
            SegmentSpec {
                start_ms: 0,
                end_ms: 3_000,
                audio: Some(false),
                video: None,
            },
            SegmentSpec {
                start_ms: 3_000,
                end_ms: 5_000,
                audio: Some(false),
                video: Some(video((320, 240), 0)),
            },
        ],
        3,
    );
    let (file, summary) = remux(&segments);
    check(&segments, &file, &summary);
    assert_eq!(
        summary.video_size,
        Some(FrameSize {
            width: 320,
            height: 240
        })
    );
}

#[test]
fn a_long_stretch_without_keyframes_still_fits_16_bit_block_times() {
    // Video alone (the microphone removed), one keyframe, then 40 s of interframes.
    let segments = recording(
        &[SegmentSpec {
            start_ms: 0,
            end_ms: 40_000,
            audio: None,
            video: Some(VideoSpec {
                keyframe_every: usize::MAX,
                ..video((640, 360), 0)
            }),
        }],
        4,
    );
    let (file, summary) = remux(&segments);
    let parsed = check(&segments, &file, &summary);
    assert_eq!(parsed.clusters.len(), 2);
    // The second cluster opens on an interframe, which is no place to seek to.
    assert_eq!(parsed.cues.len(), 1);
    assert_eq!(parsed.tracks.len(), 1);
}

#[test]
fn the_bitstream_decides_what_a_keyframe_is() {
    let mut rng = StdRng::seed_from_u64(5);
    let segments = vec![vec![
        // Flagged as a keyframe but an interframe: dropped, the segment has no keyframe yet.
        frame(Track::Video, CLOCK_US, true, vp8_interframe(&mut rng)),
        // Not flagged but a keyframe: the video starts here and opens a cluster.
        frame(
            Track::Video,
            CLOCK_US + 33_000,
            false,
            vp8_keyframe(&mut rng, (160, 90)),
        ),
        frame(Track::Video, CLOCK_US + 66_000, true, vp8_interframe(&mut rng)),
    ]];
    let (file, summary) = remux(&segments);
    let parsed = check(&segments, &file, &summary);
    assert_eq!(summary.dropped_video_frames, 1);
    let keyframes: Vec<_> = parsed.blocks().iter().map(|b| b.keyframe).collect();
    assert_eq!(keyframes, [true, false]);
}

#[test]
fn the_head_is_the_only_part_written_twice() {
    /// Records every write as (offset, length).
    struct Tracking {
        inner: Cursor<Vec<u8>>,
        writes: Vec<(u64, usize)>,
    }
    impl Write for Tracking {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let at = self.inner.position();
            let n = self.inner.write(buf)?;
            self.writes.push((at, n));
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Tracking {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    let segments = recording(
        &[SegmentSpec {
            start_ms: 0,
            end_ms: 9_000,
            audio: Some(false),
            video: Some(video((640, 480), 0)),
        }],
        6,
    );
    // The file need not start at the beginning of the sink.
    let prefix = b"prefix!";
    let mut inner = Cursor::new(prefix.to_vec());
    inner.seek(SeekFrom::End(0)).unwrap();
    let mut sink = Tracking {
        inner,
        writes: Vec::new(),
    };
    let summary = remux_segments(infallible(&segments), &mut sink).unwrap();
    let end = sink.inner.position();
    let bytes = sink.inner.into_inner();
    assert_eq!(end, bytes.len() as u64, "left at the end of the file");
    assert_eq!(&bytes[..prefix.len()], prefix);
    let file = &bytes[prefix.len()..];
    let parsed = check(&segments, file, &summary);

    // The segment's data runs to the end of the file; the head ends at the first cluster.
    let segment_data = file.len() - webm::children(file, 0, file.len())[1].data.len();
    let head_len = segment_data as u64 + parsed.clusters[0].position;
    let start = prefix.len() as u64;
    // Everything is appended front to back without holes, except one rewrite of the head.
    let mut written_to = start;
    let mut rewrites = Vec::new();
    for &(at, len) in &sink.writes {
        if at == written_to {
            written_to += len as u64;
        } else {
            assert!(at + len as u64 <= written_to, "a write at {at} skips ahead");
            rewrites.push((at, len));
        }
    }
    assert_eq!(written_to, end);
    assert_eq!(rewrites, [(start, head_len as usize)]);
}

#[test]
fn a_segment_cut_by_a_crash_plays_up_to_the_cut() {
    const RECORDING: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa);
    let key = DataKey::generate(&mut StdRng::seed_from_u64(7));
    let segments = recording(
        &[
            SegmentSpec {
                start_ms: 0,
                end_ms: 3_000,
                audio: Some(false),
                video: Some(video((640, 480), 0)),
            },
            SegmentSpec {
                start_ms: 5_000,
                end_ms: 8_000,
                audio: Some(false),
                video: Some(video((640, 480), 2)),
            },
        ],
        7,
    );
    // Segment 0 is sealed every 100 frames and the server dies before it is finished: the
    // frames after its last seal are lost. Segment 1 comes after the restart.
    let dir = tempfile::tempdir().unwrap();
    let mut stored = Vec::new();
    let mut intact = Vec::new();
    for (index, frames) in segments.iter().enumerate() {
        let header = SegmentHeader {
            recording: RECORDING,
            segment: index as u32,
            created_at_ms: 0,
        };
        let path = dir.path().join(format!("{index}.seg"));
        let mut writer = SegmentWriter::create(&path, &key, header).unwrap();
        let mut sealed = 0;
        for (i, f) in frames.iter().enumerate() {
            writer.push(f.sender, f).unwrap();
            if i % 100 == 99 {
                writer.tick((i as u64 / 100 + 1) * SEAL_INTERVAL_MS).unwrap();
                sealed = i + 1;
            }
        }
        if index == 0 {
            // A writer dropped unfinished leaves what a crash leaves.
            drop(writer);
            intact.push(frames[..sealed].to_vec());
        } else {
            writer.finish().unwrap();
            intact.push(frames.clone());
        }
        stored.push(std::fs::read(&path).unwrap());
    }
    assert!(intact[0].len() < segments[0].len());

    // The caller's policy: a truncated segment ends where it was cut; other damage stops the
    // remux.
    let remux_stored = |stored: &[Vec<u8>]| {
        let readers = stored.iter().enumerate().map(|(i, bytes)| {
            SegmentReader::new(&bytes[..], &key, RECORDING, i as u32)
                .map(|reader| reader.filter(|f| !matches!(f, Err(SegmentError::Truncated { .. }))))
        });
        let mut out = Cursor::new(Vec::new());
        remux_segments(readers, &mut out).map(|summary| (out.into_inner(), summary))
    };
    let (file, summary) = remux_stored(&stored).unwrap();
    check(&intact, &file, &summary);

    let mut tampered = stored.clone();
    let last = tampered[1].len() - 1;
    tampered[1][last] ^= 1;
    let err = remux_stored(&tampered).unwrap_err();
    assert!(
        matches!(err, RemuxError::Read(SegmentError::Tampered { .. })),
        "{err}"
    );
}

#[test]
fn frames_out_of_order_are_refused() {
    let mut rng = StdRng::seed_from_u64(8);
    let key = vp8_keyframe(&mut rng, (64, 64));
    // Video at 0 and 1 ms, then one `last_video_us`, then audio at 0.5 ms: by then the input
    // has run on by `last_video_us`, which frees the video at 1 ms once that reaches the window.
    let mut frames = |last_video_us| {
        vec![
            frame(Track::Video, CLOCK_US, true, key.clone()),
            frame(Track::Video, CLOCK_US + 1_000, false, vp8_interframe(&mut rng)),
            frame(
                Track::Video,
                CLOCK_US + last_video_us,
                false,
                vp8_interframe(&mut rng),
            ),
            frame(Track::Audio, CLOCK_US + 500, true, opus(&mut rng, false)),
        ]
    };
    let within_window = [frames(1_000 + REORDER_WINDOW_US - 1)];
    let (file, summary) = remux(&within_window);
    let parsed = check(&within_window, &file, &summary);
    assert_eq!(
        parsed.blocks()[1].track,
        2,
        "audio merged back between the video frames"
    );

    let too_late = frames(1_000 + REORDER_WINDOW_US);
    let err = remux_segments(infallible(&[too_late]), Cursor::new(Vec::new())).unwrap_err();
    assert!(
        matches!(err, RemuxError::OutOfOrder { participant, track: Track::Audio, timestamp_us, after_us }
            if participant == PEOPLE[0] && timestamp_us == CLOCK_US + 500 && after_us == CLOCK_US + 1_000),
        "{err}"
    );

    // A track going back in time.
    let backwards = vec![
        frame(Track::Video, CLOCK_US + 40_000, true, key.clone()),
        frame(Track::Video, CLOCK_US + 20_000, false, vp8_interframe(&mut rng)),
    ];
    let err = remux_segments(infallible(&[backwards]), Cursor::new(Vec::new())).unwrap_err();
    assert!(
        matches!(
            err,
            RemuxError::OutOfOrder {
                track: Track::Video,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn read_errors_and_empty_recordings_are_errors() {
    let failing: Vec<Result<Vec<Result<StoredFrame, io::Error>>, io::Error>> =
        vec![Ok(vec![Err(io::Error::other("disk on fire"))])];
    let err = remux_segments(failing, Cursor::new(Vec::new())).unwrap_err();
    assert!(
        matches!(&err, RemuxError::Read(e) if e.to_string() == "disk on fire"),
        "{err}"
    );

    let unopenable: Vec<Result<Vec<Result<StoredFrame, io::Error>>, io::Error>> =
        vec![Err(io::Error::other("no such segment"))];
    let err = remux_segments(unopenable, Cursor::new(Vec::new())).unwrap_err();
    assert!(matches!(err, RemuxError::Read(_)), "{err}");

    let mut rng = StdRng::seed_from_u64(9);
    let only_interframes = vec![vec![frame(
        Track::Video,
        CLOCK_US,
        false,
        vp8_interframe(&mut rng),
    )]];
    for segments in [vec![], vec![vec![]], only_interframes] {
        let err = remux_segments(infallible(&segments), Cursor::new(Vec::new())).unwrap_err();
        assert!(matches!(err, RemuxError::Webm(WebmError::Empty)), "{err}");
    }
}

#[test]
fn the_writer_refuses_what_it_cannot_mux() {
    let mut rng = StdRng::seed_from_u64(10);
    let track = |who: usize, kind| TrackKey {
        participant: ParticipantId(Uuid::from_u128(who as u128)),
        kind,
    };
    let mut writer = WebmWriter::new(Cursor::new(Vec::new())).unwrap();
    let err = writer
        .push(track(0, Track::Video), 0, &vp8_interframe(&mut rng))
        .unwrap_err();
    assert!(matches!(err, WebmError::VideoBeforeKeyframe), "{err}");
    writer
        .push(track(0, Track::Audio), 1_000, &opus(&mut rng, false))
        .unwrap();
    // Each new video track must start on a keyframe, too.
    writer
        .push(track(1, Track::Video), 1_000, &vp8_keyframe(&mut rng, (64, 64)))
        .unwrap();
    let err = writer
        .push(track(2, Track::Video), 1_000, &vp8_interframe(&mut rng))
        .unwrap_err();
    assert!(matches!(err, WebmError::VideoBeforeKeyframe), "{err}");
    // Room is kept for MAX_TRACKS tracks, and no more.
    for who in 2..MAX_TRACKS {
        writer
            .push(track(who, Track::Audio), 1_000, &opus(&mut rng, false))
            .unwrap();
    }
    let err = writer
        .push(track(MAX_TRACKS, Track::Audio), 1_000, &opus(&mut rng, false))
        .unwrap_err();
    assert!(matches!(err, WebmError::TooManyTracks), "{err}");
    let err = writer
        .push(track(0, Track::Audio), 999, &opus(&mut rng, false))
        .unwrap_err();
    assert!(
        matches!(
            err,
            WebmError::OutOfOrder {
                timestamp_us: 999,
                after_us: 1_000
            }
        ),
        "{err}"
    );
}

fn video_spec() -> impl Strategy<Value = VideoSpec> {
    (
        prop::sample::select(vec![(320u16, 240u16), (640, 480), (1280, 720)]),
        prop::sample::select(vec![33_333u64, 66_666, 100_000]),
        0usize..5,
        1usize..200,
        0u64..400_000,
    )
        .prop_map(
            |(size, interval_us, leading_interframes, keyframe_every, max_lag_us)| VideoSpec {
                size,
                interval_us,
                leading_interframes,
                keyframe_every,
                max_lag_us,
            },
        )
}

/// A segment: the gap before it, its length, and what each of the three people sends in it.
type SegmentChoice = (u64, u64, Vec<(Option<bool>, Option<VideoSpec>)>);

fn segment_choice() -> impl Strategy<Value = SegmentChoice> {
    let sends = (
        prop::option::weighted(0.8, any::<bool>()),
        prop::option::weighted(0.6, video_spec()),
    );
    (
        0u64..3_000,
        20u64..6_000,
        prop::collection::vec(sends, PEOPLE.len()),
    )
}

/// Per person, their spec of each segment.
fn people_specs(choices: Vec<SegmentChoice>, people: usize) -> Vec<Vec<SegmentSpec>> {
    let mut specs = vec![Vec::new(); people];
    let mut start_ms = 0;
    for (gap_ms, len_ms, sends) in choices {
        start_ms += gap_ms;
        for (who, (audio, video)) in sends.into_iter().take(people).enumerate() {
            specs[who].push(SegmentSpec {
                start_ms,
                end_ms: start_ms + len_ms,
                audio,
                video,
            });
        }
        start_ms += len_ms;
    }
    specs
}

/// Every block is in a track named for the person whose frame it is: the last payload byte of
/// a synthetic frame is its sender's index.
fn check_blocks_are_their_senders(parsed: &Parsed) {
    for block in parsed.blocks() {
        let sender = PEOPLE[usize::from(*block.payload.last().unwrap())];
        let track = &parsed.tracks[block.track as usize - 1];
        assert_eq!(track.number, block.track);
        assert!(
            track.name.starts_with(&sender.0.to_string()),
            "{sender:?}'s frame in track {}",
            track.name
        );
    }
}

fn options_for(choice: u8, people: usize) -> RemuxOptions {
    let who = PEOPLE[usize::from(choice) % people];
    match choice / 8 {
        0 => RemuxOptions::default(),
        1 => RemuxOptions::participant(who),
        2 => RemuxOptions::video_of(who),
        _ => RemuxOptions {
            audio_of: Include::Only(who),
            video_of: Include::Nobody,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any mix of one to three people, segments, gaps, tracks switching on and off, leading
    /// interframes and storage lag within the window round-trips, with every frame in its own
    /// sender's track of its kind and nowhere else, whichever tracks are picked.
    #[test]
    fn any_recording_round_trips(
        choices in prop::collection::vec(segment_choice(), 1..5),
        people in 1..=PEOPLE.len(),
        option in 0u8..32,
        seed in any::<u64>(),
    ) {
        let options = options_for(option, people);
        let specs = people_specs(choices, people);
        let specs: Vec<&[SegmentSpec]> = specs.iter().map(Vec::as_slice).collect();
        let segments = recording_of(&specs, seed);
        let mut out = Cursor::new(Vec::new());
        match remux_segments_with(infallible(&segments), &mut out, options) {
            Ok(summary) => {
                let parsed = check_with(&segments, options, out.get_ref(), &summary);
                check_blocks_are_their_senders(&parsed);
            }
            Err(RemuxError::Webm(WebmError::Empty)) => {
                prop_assert!(expected(&segments, options).blocks.is_empty());
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}

/// A consultation as the issue tells it: the clinician on video throughout; the patient on audio,
/// then video, then a reconnect without their camera; an interpreter who joins on audio later.
#[test]
fn each_participant_gets_a_track_of_each_kind_they_sent() {
    let patient = [
        SegmentSpec {
            start_ms: 0,
            end_ms: 4_000,
            audio: Some(false),
            video: None,
        },
        SegmentSpec {
            start_ms: 4_000,
            end_ms: 9_000,
            audio: Some(false),
            video: Some(video((640, 480), 2)),
        },
        SegmentSpec {
            start_ms: 10_000,
            end_ms: 14_000,
            audio: Some(true),
            video: None,
        },
    ];
    let clinician: Vec<_> = [(0, 4_000), (4_000, 9_000), (10_000, 14_000)]
        .into_iter()
        .map(|(start_ms, end_ms)| SegmentSpec {
            start_ms,
            end_ms,
            audio: Some(false),
            video: Some(video((1280, 720), 1)),
        })
        .collect();
    let interpreter = [
        silent(0, 4_000),
        silent(4_000, 9_000),
        SegmentSpec {
            start_ms: 11_000,
            end_ms: 14_000,
            audio: Some(false),
            video: None,
        },
    ];
    let segments = recording_of(&[&patient, &clinician, &interpreter], 11);
    let (file, summary) = remux(&segments);
    let parsed = check(&segments, &file, &summary);
    check_blocks_are_their_senders(&parsed);
    let kinds = |kind| {
        let mut whose: Vec<_> = summary
            .tracks
            .iter()
            .filter(|t| t.key.kind == kind)
            .map(|t| t.key.participant)
            .collect();
        whose.sort();
        whose
    };
    assert_eq!(kinds(Track::Audio), PEOPLE);
    assert_eq!(kinds(Track::Video), PEOPLE[..2]);
    // Two leading interframes of the patient's, one of the clinician's in each segment.
    assert_eq!(summary.dropped_video_frames, 2 + 3);
    let patient_audio = summary.tracks.iter().find(|t| {
        t.key
            == TrackKey {
                participant: PEOPLE[0],
                kind: Track::Audio,
            }
    });
    assert_eq!(
        patient_audio.unwrap().channels,
        Some(2),
        "stereo after the reconnect"
    );

    // For a browser: one participant per file, lined up by their start times.
    for who in PEOPLE {
        let options = RemuxOptions::participant(who);
        let mut out = Cursor::new(Vec::new());
        let summary = remux_segments_with(infallible(&segments), &mut out, options).unwrap();
        let parsed = check_with(&segments, options, out.get_ref(), &summary);
        assert!(summary.tracks.iter().all(|t| t.key.participant == who));
        check_blocks_are_their_senders(&parsed);
    }
    let options = RemuxOptions::video_of(PEOPLE[1]);
    let mut out = Cursor::new(Vec::new());
    let summary = remux_segments_with(infallible(&segments), &mut out, options).unwrap();
    check_with(&segments, options, out.get_ref(), &summary);
    assert_eq!(
        summary.tracks.len(),
        4,
        "the clinician's video and everyone's audio"
    );

    let nothing = RemuxOptions {
        audio_of: Include::Nobody,
        video_of: Include::Nobody,
    };
    let err = remux_segments_with(infallible(&segments), Cursor::new(Vec::new()), nothing).unwrap_err();
    assert!(matches!(err, RemuxError::Webm(WebmError::Empty)), "{err}");
}

/// Through real segment files: a wrong key, a tampered chunk and a cut-off segment each stop the
/// remux with the reader's error, never a file with garbage in it.
#[test]
fn damaged_segments_stop_the_remux_with_the_readers_error() {
    const RECORDING: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00bb);
    let key = DataKey::generate(&mut StdRng::seed_from_u64(12));
    let other_key = DataKey::generate(&mut StdRng::seed_from_u64(13));
    let both = [SegmentSpec {
        start_ms: 0,
        end_ms: 2_000,
        audio: Some(false),
        video: Some(video((320, 240), 0)),
    }];
    let segments = recording_of(&[&both, &both], 12);
    let header = SegmentHeader {
        recording: RECORDING,
        segment: 0,
        created_at_ms: 0,
    };
    let mut writer = SegmentWriter::new(Vec::new(), &key, header).unwrap();
    for f in &segments[0] {
        writer.push(f.sender, f).unwrap();
    }
    let stored = writer.finish().unwrap();
    let remux_with = |bytes: &[u8], key: &DataKey| {
        let readers = [SegmentReader::new(bytes, key, RECORDING, 0)];
        remux_segments(readers, Cursor::new(Vec::new()))
    };
    let summary = remux_with(&stored, &key).unwrap();
    assert_eq!(summary.tracks.len(), 4);

    let err = remux_with(&stored, &other_key).unwrap_err();
    assert!(matches!(err, RemuxError::Read(SegmentError::WrongKey)), "{err}");
    let mut tampered = stored.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x10;
    let err = remux_with(&tampered, &key).unwrap_err();
    assert!(
        matches!(err, RemuxError::Read(SegmentError::Tampered { .. })),
        "{err}"
    );
    let err = remux_with(&stored[..stored.len() - 1], &key).unwrap_err();
    assert!(
        matches!(err, RemuxError::Read(SegmentError::Truncated { .. })),
        "{err}"
    );
}
