//! A WebM writer for exactly what Confide records: one track per participant and kind, VP8 for
//! video and Opus for audio, numbered 1, 2, … in the order their first frames are written.
//!
//! # Layout
//!
//! ```text
//! EBML header            DocType "webm", DocTypeVersion 4 (CodecDelay, SeekPreRoll),
//!                        DocTypeReadVersion 2 (SimpleBlock)
//! Segment                size in 8 bytes
//!   SeekHead             → Info, Tracks, Cues; positions in 8 bytes
//!   Info                 TimestampScale 1 ms, Duration (8-byte float), MuxingApp, WritingApp
//!   Tracks               a TrackEntry per track, in number order, each named
//!                        "<participant id> audio" or "<participant id> video":
//!                        V_VP8 (PixelWidth/PixelHeight in 2 bytes each), or
//!                        A_OPUS (OpusHead, CodecDelay, SeekPreRoll, 48 kHz, Channels)
//!   Void                 the room left for the MAX_TRACKS entries the file could have held
//!   Cluster …            Timestamp, then SimpleBlocks (no lacing)
//!   Cues                 one CuePoint per cluster that starts with a keyframe
//! ```
//!
//! Everything before the first cluster (the "head") depends on the whole recording: the
//! segment's size, where the cues are, the duration, which tracks exist, the picture size and
//! the channel counts. Every such value has a fixed width, room is kept for [`MAX_TRACKS`] entries, so the head is written once with
//! placeholders and rewritten in place, at the same length, by [`WebmWriter::finish`]. Apart
//! from that one rewrite the file is written front to back, so a sink that encrypts need only
//! hold back the head.

use std::io::{self, Seek, SeekFrom, Write};

use super::codec::{self, FrameSize};
use crate::segment::Track;
use crate::sfu::ParticipantId;

/// A cluster is closed at the first audio block this long after it began, so a player can seek
/// into long stretches without a video keyframe (WebRTC sends keyframes only on request).
pub const CLUSTER_SPAN_MS: u64 = 5_000;
/// A block's time is stored relative to its cluster as a signed 16-bit count of ms, so a
/// cluster must close before this span whatever its blocks are.
const MAX_RELATIVE_MS: u64 = i16::MAX as u64;
/// The last video frame is taken to last as long as the one before it, but at most this long:
/// the gap before it may be a camera switched off, not a frame interval.
const MAX_VIDEO_FRAME_US: u64 = 100_000;

/// The most tracks a file holds: four participants' audio and video, twice over. The head keeps
/// room for this many, since which tracks there are is only known at the end.
pub const MAX_TRACKS: usize = 16;

/// libopus's encoder lookahead at 48 kHz (6.5 ms), which WebRTC's encoder puts before the
/// first real sample: the pre-skip in the OpusHead and, in ns, the CodecDelay, as the Matroska
/// Opus mapping asks.
const OPUS_PRE_SKIP: u16 = 312;
const OPUS_CODEC_DELAY_NS: u64 = OPUS_PRE_SKIP as u64 * 1_000_000_000 / 48_000;
/// What the Matroska Opus mapping recommends: the decoder needs 80 ms to converge after a seek.
const OPUS_SEEK_PRE_ROLL_NS: u64 = 80_000_000;

// Element IDs (RFC 9559 and the EBML spec, RFC 8794), marker bits included.
const EBML: u32 = 0x1A45_DFA3;
const EBML_VERSION: u32 = 0x4286;
const EBML_READ_VERSION: u32 = 0x42F7;
const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
const DOC_TYPE: u32 = 0x4282;
const DOC_TYPE_VERSION: u32 = 0x4287;
const DOC_TYPE_READ_VERSION: u32 = 0x4285;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const SEEK: u32 = 0x4DBB;
const SEEK_ID: u32 = 0x53AB;
const SEEK_POSITION: u32 = 0x53AC;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const MUXING_APP: u32 = 0x4D80;
const WRITING_APP: u32 = 0x5741;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_UID: u32 = 0x73C5;
const TRACK_TYPE: u32 = 0x83;
const NAME: u32 = 0x536E;
const FLAG_LACING: u32 = 0x9C;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const CODEC_DELAY: u32 = 0x56AA;
const SEEK_PRE_ROLL: u32 = 0x56BB;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;
const CLUSTER: u32 = 0x1F43_B675;
const TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const CUES: u32 = 0x1C53_BB6B;
const CUE_POINT: u32 = 0xBB;
const CUE_TIME: u32 = 0xB3;
const CUE_TRACK_POSITIONS: u32 = 0xB7;
const CUE_TRACK: u32 = 0xF7;
const CUE_CLUSTER_POSITION: u32 = 0xF1;
const VOID: u32 = 0xEC;

#[derive(Debug, thiserror::Error)]
pub enum WebmError {
    #[error("writing the WebM file: {0}")]
    Io(#[from] io::Error),
    #[error("block at {timestamp_us} µs comes after one at {after_us} µs: blocks must be in time order")]
    OutOfOrder { timestamp_us: u64, after_us: u64 },
    #[error("the first video frame is not a VP8 keyframe: a decoder could not start there")]
    VideoBeforeKeyframe,
    #[error("a file holds at most {MAX_TRACKS} tracks")]
    TooManyTracks,
    #[error("nothing to write: a WebM file needs at least one frame")]
    Empty,
}

/// One track of a file: what one participant sent of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrackKey {
    pub participant: ParticipantId,
    pub kind: Track,
}

/// What a finished file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebmSummary {
    /// From the first frame to the end of the last, gaps included.
    pub duration_ms: u64,
    /// The time of the first frame, on the clock the frames came with: the file's 0.
    pub start_us: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    /// The first video track's size; `None` for a file without video.
    pub video_size: Option<FrameSize>,
    /// Every track, in number order.
    pub tracks: Vec<TrackSummary>,
}

/// One track of a finished file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackSummary {
    /// The track number blocks carry, from 1.
    pub number: u8,
    pub key: TrackKey,
    pub frames: u64,
    /// Video: the size its first keyframe states.
    pub video_size: Option<FrameSize>,
    /// Audio: 1 or 2.
    pub channels: Option<u8>,
}

/// Writes one WebM file to `out`, starting at its current position. Block times are taken
/// relative to the first block, so the file starts at 0. Memory holds one cluster (at most
/// ~33 s of media) and the cues. If any call fails, the output is unusable.
///
/// Everything is appended front to back except the head (the bytes before the first cluster),
/// which [`WebmWriter::finish`] rewrites once, in place and at the same length: a sink that
/// encrypts need only hold the head back until then.
pub struct WebmWriter<W: Write + Seek> {
    out: W,
    /// Where the file starts in `out`.
    start: u64,
    /// Where the Segment's data starts in the file: seek and cue positions count from there.
    segment_data_offset: u64,
    /// Segment data written so far, which is also the next element's position.
    segment_len: u64,
    cluster: OpenCluster,
    /// CuePoint elements, one per written cluster that starts with a keyframe.
    cue_points: Vec<u8>,
    origin_us: Option<u64>,
    last_us: u64,
    /// Track `n` is `tracks[n - 1]`.
    tracks: Vec<TrackStats>,
}

/// The cluster being filled; it has no blocks yet when `blocks` is empty.
#[derive(Default)]
struct OpenCluster {
    timestamp_ms: u64,
    /// The track of its first block, when that block is a keyframe (a place to seek to).
    cue_track: Option<u8>,
    blocks: Vec<u8>,
}

struct TrackStats {
    key: TrackKey,
    frames: u64,
    /// Video: from the first frame, which is a keyframe.
    size: Option<FrameSize>,
    last_us: u64,
    last_interval_us: u64,
    /// Audio.
    stereo: bool,
    end_us: u64,
}

impl TrackStats {
    /// When the track's last frame stops playing.
    fn end_us(&self) -> u64 {
        match self.key.kind {
            // The last video frame is taken to last as long as the one before it, within reason.
            Track::Video => self.last_us + self.last_interval_us.min(MAX_VIDEO_FRAME_US),
            Track::Audio => self.end_us,
        }
    }

    fn entry(&self, number: u8) -> EntryValues {
        EntryValues {
            number,
            participant: self.key.participant,
            media: match self.key.kind {
                Track::Video => EntryMedia::Video(self.size.expect("a video track starts with a keyframe")),
                Track::Audio => EntryMedia::Audio(if self.stereo { 2 } else { 1 }),
            },
        }
    }

    fn summary(&self, number: u8) -> TrackSummary {
        TrackSummary {
            number,
            key: self.key,
            frames: self.frames,
            video_size: self.size,
            channels: (self.key.kind == Track::Audio).then_some(if self.stereo { 2 } else { 1 }),
        }
    }
}

impl<W: Write + Seek> WebmWriter<W> {
    /// Writes the head with placeholders.
    pub fn new(mut out: W) -> Result<Self, WebmError> {
        let start = out.stream_position()?;
        let head = Head::build(&HeadValues::PLACEHOLDER);
        out.write_all(&head.bytes)?;
        Ok(Self {
            out,
            start,
            segment_data_offset: head.segment_data_offset,
            segment_len: head.bytes.len() as u64 - head.segment_data_offset,
            cluster: OpenCluster::default(),
            cue_points: Vec::new(),
            origin_us: None,
            last_us: 0,
            tracks: Vec::new(),
        })
    }

    /// Adds one frame as a SimpleBlock of `track`'s track, which is added at its first frame.
    /// Frames of all tracks must come in time order (equal times are fine), and a video track's
    /// first frame must be a VP8 keyframe. Every Opus packet is a keyframe; a VP8 frame is one
    /// if its header says so.
    pub fn push(&mut self, track: TrackKey, timestamp_us: u64, payload: &[u8]) -> Result<(), WebmError> {
        if self.origin_us.is_some() && timestamp_us < self.last_us {
            return Err(WebmError::OutOfOrder {
                timestamp_us,
                after_us: self.last_us,
            });
        }
        let vp8_key = (track.kind == Track::Video)
            .then(|| codec::vp8_keyframe(payload))
            .flatten();
        let index = match self.tracks.iter().position(|t| t.key == track) {
            Some(index) => index,
            None => {
                if self.tracks.len() == MAX_TRACKS {
                    return Err(WebmError::TooManyTracks);
                }
                if track.kind == Track::Video && vp8_key.is_none() {
                    return Err(WebmError::VideoBeforeKeyframe);
                }
                self.tracks.push(TrackStats {
                    key: track,
                    frames: 0,
                    size: vp8_key,
                    last_us: timestamp_us,
                    last_interval_us: 0,
                    stereo: false,
                    end_us: 0,
                });
                self.tracks.len() - 1
            }
        };
        let number = u8::try_from(index + 1).expect("at most MAX_TRACKS tracks");
        let stats = &mut self.tracks[index];
        stats.frames += 1;
        let keyframe = match track.kind {
            Track::Audio => {
                stats.stereo |= codec::opus_is_stereo(payload);
                let end_us = timestamp_us + codec::opus_duration_us(payload);
                stats.end_us = stats.end_us.max(end_us);
                true
            }
            Track::Video => {
                stats.last_interval_us = timestamp_us - stats.last_us;
                stats.last_us = timestamp_us;
                vp8_key.is_some()
            }
        };
        let origin_us = *self.origin_us.get_or_insert(timestamp_us);
        self.last_us = timestamp_us;
        let ms = (timestamp_us - origin_us + 500) / 1000;

        let age_ms = ms - self.cluster.timestamp_ms;
        let split = self.cluster.blocks.is_empty()
            || age_ms > MAX_RELATIVE_MS
            || match track.kind {
                Track::Video => keyframe,
                Track::Audio => age_ms >= CLUSTER_SPAN_MS,
            };
        if split {
            self.write_cluster()?;
            self.cluster.timestamp_ms = ms;
            self.cluster.cue_track = keyframe.then_some(number);
        }
        let relative =
            i16::try_from(ms - self.cluster.timestamp_ms).expect("clusters split before this overflows");
        let blocks = &mut self.cluster.blocks;
        put_id(blocks, SIMPLE_BLOCK);
        put_size(blocks, 4 + payload.len() as u64);
        blocks.push(0x80 | number);
        blocks.extend_from_slice(&relative.to_be_bytes());
        blocks.push(if keyframe { 0x80 } else { 0 });
        blocks.extend_from_slice(payload);
        Ok(())
    }

    /// Writes the last cluster and the cues, rewrites the head with the final values, and
    /// leaves `out` at the end of the file.
    pub fn finish(mut self) -> Result<WebmSummary, WebmError> {
        let Some(origin_us) = self.origin_us else {
            return Err(WebmError::Empty);
        };
        self.write_cluster()?;
        let cues_position = self.segment_len;
        let mut cues = Vec::with_capacity(self.cue_points.len() + 12);
        put_element(&mut cues, CUES, &self.cue_points);
        self.out.write_all(&cues)?;
        self.segment_len += cues.len() as u64;

        let end_us = self
            .tracks
            .iter()
            .map(TrackStats::end_us)
            .max()
            .unwrap_or(origin_us);
        let duration_us = end_us.max(origin_us) - origin_us;
        let numbered = || (1..).zip(&self.tracks);
        let entries: Vec<_> = numbered().map(|(number, t)| t.entry(number)).collect();
        let head = Head::build(&HeadValues {
            segment_size: Some(self.segment_len),
            cues_position,
            duration_ms: duration_us as f64 / 1000.0,
            tracks: &entries,
        });
        self.out.seek(SeekFrom::Start(self.start))?;
        self.out.write_all(&head.bytes)?;
        self.out.seek(SeekFrom::Start(
            self.start + self.segment_data_offset + self.segment_len,
        ))?;
        self.out.flush()?;
        let frames_of = |kind| {
            let of_kind = self.tracks.iter().filter(|t| t.key.kind == kind);
            of_kind.map(|t| t.frames).sum()
        };
        Ok(WebmSummary {
            duration_ms: (duration_us + 500) / 1000,
            start_us: origin_us,
            video_frames: frames_of(Track::Video),
            audio_frames: frames_of(Track::Audio),
            video_size: self.tracks.iter().find_map(|t| t.size),
            tracks: numbered().map(|(number, t)| t.summary(number)).collect(),
        })
    }

    /// Writes the open cluster, if it has blocks, and its cue.
    fn write_cluster(&mut self) -> Result<(), WebmError> {
        if self.cluster.blocks.is_empty() {
            return Ok(());
        }
        let position = self.segment_len;
        let mut timestamp = Vec::with_capacity(8);
        put_uint(&mut timestamp, TIMESTAMP, self.cluster.timestamp_ms);
        let mut head = Vec::with_capacity(12);
        put_id(&mut head, CLUSTER);
        put_size(&mut head, (timestamp.len() + self.cluster.blocks.len()) as u64);
        head.extend_from_slice(&timestamp);
        self.out.write_all(&head)?;
        self.out.write_all(&self.cluster.blocks)?;
        self.segment_len += (head.len() + self.cluster.blocks.len()) as u64;
        self.cluster.blocks.clear();
        if let Some(track) = self.cluster.cue_track {
            put_master(&mut self.cue_points, CUE_POINT, |point| {
                put_uint(point, CUE_TIME, self.cluster.timestamp_ms);
                put_master(point, CUE_TRACK_POSITIONS, |positions| {
                    put_uint(positions, CUE_TRACK, track.into());
                    put_uint(positions, CUE_CLUSTER_POSITION, position);
                });
            });
        }
        Ok(())
    }
}

/// The values the head states; each is written at a fixed width.
struct HeadValues<'a> {
    /// `None` writes "unknown size", which is what a reader sees if the remux never finishes.
    segment_size: Option<u64>,
    cues_position: u64,
    duration_ms: f64,
    tracks: &'a [EntryValues],
}

impl HeadValues<'_> {
    const PLACEHOLDER: Self = Self {
        segment_size: None,
        cues_position: 0,
        duration_ms: 0.0,
        tracks: &[],
    };
}

/// What one TrackEntry states.
struct EntryValues {
    number: u8,
    participant: ParticipantId,
    media: EntryMedia,
}

enum EntryMedia {
    Video(FrameSize),
    /// The channel count.
    Audio(u8),
}

struct Head {
    bytes: Vec<u8>,
    segment_data_offset: u64,
}

impl Head {
    fn build(values: &HeadValues) -> Self {
        let mut bytes = Vec::with_capacity(512);
        put_master(&mut bytes, EBML, |header| {
            put_uint(header, EBML_VERSION, 1);
            put_uint(header, EBML_READ_VERSION, 1);
            put_uint(header, EBML_MAX_ID_LENGTH, 4);
            put_uint(header, EBML_MAX_SIZE_LENGTH, 8);
            put_element(header, DOC_TYPE, b"webm");
            put_uint(header, DOC_TYPE_VERSION, 4);
            put_uint(header, DOC_TYPE_READ_VERSION, 2);
        });
        put_id(&mut bytes, SEGMENT);
        put_size8(&mut bytes, values.segment_size);
        let segment_data_offset = bytes.len() as u64;

        let mut info = Vec::new();
        put_master(&mut info, INFO, |info| {
            put_uint(info, TIMESTAMP_SCALE, 1_000_000);
            put_element(info, DURATION, &values.duration_ms.to_be_bytes());
            put_element(info, MUXING_APP, b"Confide");
            put_element(info, WRITING_APP, b"Confide");
        });
        let tracks = tracks(values.tracks);
        // Tracks are given room for MAX_TRACKS of the longer kind of entry, plus the smallest
        // Void, so that what they leave over is always a Void and the head keeps its length.
        let room = tracks_room();
        // Positions count from the segment's data; the SeekHead itself comes first.
        let seek_head_len = seek_head(&[(INFO, 0), (TRACKS, 0), (CUES, 0)]).len() as u64;
        let info_position = seek_head_len;
        let tracks_position = info_position + info.len() as u64;
        bytes.extend_from_slice(&seek_head(&[
            (INFO, info_position),
            (TRACKS, tracks_position),
            (CUES, values.cues_position),
        ]));
        bytes.extend_from_slice(&info);
        bytes.extend_from_slice(&tracks);
        put_void(&mut bytes, room - tracks.len());
        Self {
            bytes,
            segment_data_offset,
        }
    }
}

fn seek_head(targets: &[(u32, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    put_master(&mut out, SEEK_HEAD, |seek_head| {
        for &(id, position) in targets {
            put_master(seek_head, SEEK, |seek| {
                put_element(seek, SEEK_ID, &id.to_be_bytes());
                put_element(seek, SEEK_POSITION, &position.to_be_bytes());
            });
        }
    });
    out
}

fn tracks(entries: &[EntryValues]) -> Vec<u8> {
    let mut out = Vec::new();
    put_master(&mut out, TRACKS, |tracks| {
        for entry in entries {
            match entry.media {
                EntryMedia::Video(size) => video_entry(tracks, entry.number, entry.participant, size),
                EntryMedia::Audio(channels) => audio_entry(tracks, entry.number, entry.participant, channels),
            }
        }
    });
    out
}

/// The most bytes Tracks can take, plus the 2 of the smallest Void. Every entry field has a fixed
/// width, so the longest entry of each kind is any entry of that kind.
fn tracks_room() -> usize {
    let participant = ParticipantId(uuid::Uuid::nil());
    let video = EntryValues {
        number: MAX_TRACKS as u8,
        participant,
        media: EntryMedia::Video(FrameSize { width: 1, height: 1 }),
    };
    let audio = EntryValues {
        number: MAX_TRACKS as u8,
        participant,
        media: EntryMedia::Audio(2),
    };
    let longest = if tracks(std::slice::from_ref(&video)).len() >= tracks(std::slice::from_ref(&audio)).len()
    {
        video
    } else {
        audio
    };
    let entry_len = tracks(std::slice::from_ref(&longest)).len() - tracks(&[]).len();
    // The element's own ID and an 8-byte size bound its header.
    4 + 8 + MAX_TRACKS * entry_len + 2
}

/// "<participant id> audio" or "… video": what a player shows, and what tells the server whose
/// track it is.
fn track_name(participant: ParticipantId, kind: &str) -> Vec<u8> {
    format!("{} {kind}", participant.0.hyphenated()).into_bytes()
}

fn video_entry(out: &mut Vec<u8>, number: u8, participant: ParticipantId, size: FrameSize) {
    put_master(out, TRACK_ENTRY, |entry| {
        put_uint(entry, TRACK_NUMBER, number.into());
        put_uint(entry, TRACK_UID, number.into());
        put_uint(entry, TRACK_TYPE, 1);
        put_uint(entry, FLAG_LACING, 0);
        put_element(entry, NAME, &track_name(participant, "video"));
        put_element(entry, CODEC_ID, b"V_VP8");
        put_master(entry, VIDEO, |video| {
            put_element(video, PIXEL_WIDTH, &size.width.to_be_bytes());
            put_element(video, PIXEL_HEIGHT, &size.height.to_be_bytes());
        });
    });
}

fn audio_entry(out: &mut Vec<u8>, number: u8, participant: ParticipantId, channels: u8) {
    // OpusHead (RFC 7845 §5.1): version 1, channels, pre-skip, input rate 48 kHz, gain 0,
    // channel mapping family 0 (mono or stereo).
    let mut opus_head = [0u8; 19];
    opus_head[..8].copy_from_slice(b"OpusHead");
    opus_head[8] = 1;
    opus_head[9] = channels;
    opus_head[10..12].copy_from_slice(&OPUS_PRE_SKIP.to_le_bytes());
    opus_head[12..16].copy_from_slice(&48_000u32.to_le_bytes());
    put_master(out, TRACK_ENTRY, |entry| {
        put_uint(entry, TRACK_NUMBER, number.into());
        put_uint(entry, TRACK_UID, number.into());
        put_uint(entry, TRACK_TYPE, 2);
        put_uint(entry, FLAG_LACING, 0);
        put_element(entry, NAME, &track_name(participant, "audio"));
        put_element(entry, CODEC_ID, b"A_OPUS");
        put_element(entry, CODEC_PRIVATE, &opus_head);
        put_uint(entry, CODEC_DELAY, OPUS_CODEC_DELAY_NS);
        put_uint(entry, SEEK_PRE_ROLL, OPUS_SEEK_PRE_ROLL_NS);
        put_master(entry, AUDIO, |audio| {
            put_element(audio, SAMPLING_FREQUENCY, &48_000f64.to_be_bytes());
            put_element(audio, CHANNELS, &[channels]);
        });
    });
}

/// A Void element of `len` bytes in all (at least 2: its ID and a 1-byte size).
fn put_void(out: &mut Vec<u8>, len: usize) {
    put_id(out, VOID);
    // A 1-byte size holds up to 126; past that, an 8-byte size fits any length.
    let data_len = if len - 2 < 127 {
        put_size(out, (len - 2) as u64);
        len - 2
    } else {
        put_size8(out, Some(len as u64 - 9));
        len - 9
    };
    out.resize(out.len() + data_len, 0);
}

fn put_id(out: &mut Vec<u8>, id: u32) {
    let skip = (id.leading_zeros() / 8) as usize;
    out.extend_from_slice(&id.to_be_bytes()[skip..]);
}

/// An element size in as few bytes as it takes; a length's all-ones value means "unknown", so
/// 127 needs two bytes.
fn put_size(out: &mut Vec<u8>, size: u64) {
    let len = (1..=8)
        .find(|len| size < (1 << (7 * len)) - 1)
        .expect("no element comes near 2^56 bytes");
    let marked = size | 1 << (7 * len);
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

/// An element size in 8 bytes, so that it can be rewritten in place; `None` is "unknown".
fn put_size8(out: &mut Vec<u8>, size: Option<u64>) {
    let value = size.unwrap_or((1 << 56) - 1);
    out.extend_from_slice(&(value | 1 << 56).to_be_bytes());
}

fn put_element(out: &mut Vec<u8>, id: u32, data: &[u8]) {
    put_id(out, id);
    put_size(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn put_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let skip = (value.leading_zeros() / 8).min(7) as usize;
    put_element(out, id, &value.to_be_bytes()[skip..]);
}

fn put_master(out: &mut Vec<u8>, id: u32, build: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    build(&mut body);
    put_element(out, id, &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_size(&mut out, value);
        out
    }

    #[test]
    fn sizes_use_the_fewest_bytes_and_avoid_the_unknown_marker() {
        assert_eq!(size(0), [0x80]);
        assert_eq!(size(126), [0xfe]);
        assert_eq!(size(127), [0x40, 0x7f]);
        assert_eq!(size(0x3ffe), [0x7f, 0xfe]);
        assert_eq!(size(0x3fff), [0x20, 0x3f, 0xff]);
        let mut eight = Vec::new();
        put_size8(&mut eight, Some(5));
        assert_eq!(eight, [1, 0, 0, 0, 0, 0, 0, 5]);
        eight.clear();
        put_size8(&mut eight, None);
        assert_eq!(eight, [1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn voids_fill_exactly_the_room_given() {
        for len in 2..300 {
            let mut void = Vec::new();
            put_void(&mut void, len);
            assert_eq!(void.len(), len);
            assert_eq!(void[0], 0xEC);
            // The size field says how many zero bytes follow it.
            let size_len = void[1].leading_zeros() as usize + 1;
            let mut size = u64::from(void[1]) & !(0x80 >> (size_len - 1));
            for &b in &void[2..1 + size_len] {
                size = size << 8 | u64::from(b);
            }
            assert_eq!(size as usize, len - 1 - size_len, "{len}");
            assert!(void[1 + size_len..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn the_head_has_one_length_whatever_it_states() {
        let placeholder = Head::build(&HeadValues::PLACEHOLDER);
        let entry = |number: usize, video: bool| EntryValues {
            number: number as u8,
            participant: ParticipantId(uuid::Uuid::from_u128(u128::MAX - number as u128)),
            media: if video {
                EntryMedia::Video(FrameSize {
                    width: 16383,
                    height: 1,
                })
            } else {
                EntryMedia::Audio(2)
            },
        };
        for count in 0..=MAX_TRACKS {
            for video_every in [1, 2, 3, usize::MAX] {
                let entries: Vec<_> = (1..=count)
                    .map(|n| entry(n, video_every != usize::MAX && n % video_every == 0))
                    .collect();
                let head = Head::build(&HeadValues {
                    segment_size: Some((1 << 56) - 2),
                    cues_position: u64::MAX,
                    duration_ms: 1e9,
                    tracks: &entries,
                });
                assert_eq!(head.bytes.len(), placeholder.bytes.len(), "{count} tracks");
                assert_eq!(head.segment_data_offset, placeholder.segment_data_offset);
            }
        }
    }
}
