//! A WebM writer for exactly what Confide records: VP8 as track 1, Opus as track 2.
//!
//! # Layout
//!
//! ```text
//! EBML header            DocType "webm", DocTypeVersion 4 (CodecDelay, SeekPreRoll),
//!                        DocTypeReadVersion 2 (SimpleBlock)
//! Segment                size in 8 bytes
//!   SeekHead             → Info, Tracks, Cues; positions in 8 bytes
//!   Info                 TimestampScale 1 ms, Duration (8-byte float), MuxingApp, WritingApp
//!   Tracks               TrackEntry 1 V_VP8 (PixelWidth/PixelHeight in 2 bytes each),
//!                        TrackEntry 2 A_OPUS (OpusHead, CodecDelay, SeekPreRoll, 48 kHz,
//!                        Channels); only the tracks the recording has
//!   Void                 the room an absent track's entry would take, if any
//!   Cluster …            Timestamp, then SimpleBlocks (no lacing)
//!   Cues                 one CuePoint per cluster that starts with a keyframe
//! ```
//!
//! Everything before the first cluster (the "head") depends on the whole recording: the
//! segment's size, where the cues are, the duration, which tracks exist, the picture size and
//! the channel count. Every such value has a fixed width, so the head is written once with
//! placeholders and rewritten in place, at the same length, by [`WebmWriter::finish`]. Apart
//! from that one rewrite the file is written front to back, so a sink that encrypts need only
//! hold back the head.

use std::io::{self, Seek, SeekFrom, Write};

use super::codec::{self, FrameSize};
use crate::segment::Track;

/// A cluster is closed at the first audio block this long after it began, so a player can seek
/// into long stretches without a video keyframe (WebRTC sends keyframes only on request).
pub const CLUSTER_SPAN_MS: u64 = 5_000;
/// A block's time is stored relative to its cluster as a signed 16-bit count of ms, so a
/// cluster must close before this span whatever its blocks are.
const MAX_RELATIVE_MS: u64 = i16::MAX as u64;
/// The last video frame is taken to last as long as the one before it, but at most this long:
/// the gap before it may be a camera switched off, not a frame interval.
const MAX_VIDEO_FRAME_US: u64 = 100_000;

const VIDEO_TRACK: u8 = 1;
const AUDIO_TRACK: u8 = 2;

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
    #[error("nothing to write: a WebM file needs at least one frame")]
    Empty,
}

/// What a finished file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebmSummary {
    /// From the first frame to the end of the last, gaps included.
    pub duration_ms: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    /// From the first VP8 keyframe; `None` for a file without video.
    pub video_size: Option<FrameSize>,
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
    video: VideoStats,
    audio: AudioStats,
}

/// The cluster being filled; it has no blocks yet when `blocks` is empty.
#[derive(Default)]
struct OpenCluster {
    timestamp_ms: u64,
    /// The track of its first block, when that block is a keyframe (a place to seek to).
    cue_track: Option<u8>,
    blocks: Vec<u8>,
}

#[derive(Default)]
struct VideoStats {
    frames: u64,
    size: Option<FrameSize>,
    last_us: u64,
    last_interval_us: u64,
}

#[derive(Default)]
struct AudioStats {
    frames: u64,
    stereo: bool,
    end_us: u64,
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
            video: VideoStats::default(),
            audio: AudioStats::default(),
        })
    }

    /// Adds one frame as a SimpleBlock. Frames of both tracks must come in time order (equal
    /// times are fine), and the first video frame must be a VP8 keyframe. Every Opus packet is a
    /// keyframe; a VP8 frame is one if its header says so.
    pub fn push(&mut self, track: Track, timestamp_us: u64, payload: &[u8]) -> Result<(), WebmError> {
        if self.origin_us.is_some() && timestamp_us < self.last_us {
            return Err(WebmError::OutOfOrder {
                timestamp_us,
                after_us: self.last_us,
            });
        }
        let (number, keyframe) = match track {
            Track::Audio => {
                self.audio.frames += 1;
                self.audio.stereo |= codec::opus_is_stereo(payload);
                let end_us = timestamp_us + codec::opus_duration_us(payload);
                self.audio.end_us = self.audio.end_us.max(end_us);
                (AUDIO_TRACK, true)
            }
            Track::Video => {
                let key = codec::vp8_keyframe(payload);
                if self.video.frames == 0 {
                    self.video.size = Some(key.ok_or(WebmError::VideoBeforeKeyframe)?);
                } else {
                    self.video.last_interval_us = timestamp_us - self.video.last_us;
                }
                self.video.frames += 1;
                self.video.last_us = timestamp_us;
                (VIDEO_TRACK, key.is_some())
            }
        };
        let origin_us = *self.origin_us.get_or_insert(timestamp_us);
        self.last_us = timestamp_us;
        let ms = (timestamp_us - origin_us + 500) / 1000;

        let age_ms = ms - self.cluster.timestamp_ms;
        let split = self.cluster.blocks.is_empty()
            || age_ms > MAX_RELATIVE_MS
            || match track {
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

        let video_end_us = self.video.last_us + self.video.last_interval_us.min(MAX_VIDEO_FRAME_US);
        let end_us = if self.video.frames > 0 {
            video_end_us.max(self.audio.end_us)
        } else {
            self.audio.end_us
        };
        let duration_us = end_us - origin_us;
        let head = Head::build(&HeadValues {
            segment_size: Some(self.segment_len),
            cues_position,
            duration_ms: duration_us as f64 / 1000.0,
            video: self.video.size,
            audio_channels: (self.audio.frames > 0).then_some(if self.audio.stereo { 2 } else { 1 }),
        });
        self.out.seek(SeekFrom::Start(self.start))?;
        self.out.write_all(&head.bytes)?;
        self.out.seek(SeekFrom::Start(
            self.start + self.segment_data_offset + self.segment_len,
        ))?;
        self.out.flush()?;
        Ok(WebmSummary {
            duration_ms: (duration_us + 500) / 1000,
            video_frames: self.video.frames,
            audio_frames: self.audio.frames,
            video_size: self.video.size,
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
struct HeadValues {
    /// `None` writes "unknown size", which is what a reader sees if the remux never finishes.
    segment_size: Option<u64>,
    cues_position: u64,
    duration_ms: f64,
    /// `None`: no video track.
    video: Option<FrameSize>,
    /// `None`: no audio track.
    audio_channels: Option<u8>,
}

impl HeadValues {
    const PLACEHOLDER: Self = Self {
        segment_size: None,
        cues_position: 0,
        duration_ms: 0.0,
        video: None,
        audio_channels: None,
    };
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
        let tracks = tracks(values.video, values.audio_channels);
        // An absent track leaves its room to a Void after Tracks, so the head keeps its length.
        let room = self::tracks(Some(FrameSize { width: 1, height: 1 }), Some(1)).len();
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
        if room > tracks.len() {
            put_void(&mut bytes, room - tracks.len());
        }
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

fn tracks(video: Option<FrameSize>, audio_channels: Option<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    put_master(&mut out, TRACKS, |tracks| {
        if let Some(size) = video {
            video_entry(tracks, size);
        }
        if let Some(channels) = audio_channels {
            audio_entry(tracks, channels);
        }
    });
    out
}

fn video_entry(out: &mut Vec<u8>, size: FrameSize) {
    put_master(out, TRACK_ENTRY, |entry| {
        put_uint(entry, TRACK_NUMBER, VIDEO_TRACK.into());
        put_uint(entry, TRACK_UID, VIDEO_TRACK.into());
        put_uint(entry, TRACK_TYPE, 1);
        put_uint(entry, FLAG_LACING, 0);
        put_element(entry, CODEC_ID, b"V_VP8");
        put_master(entry, VIDEO, |video| {
            put_element(video, PIXEL_WIDTH, &size.width.to_be_bytes());
            put_element(video, PIXEL_HEIGHT, &size.height.to_be_bytes());
        });
    });
}

fn audio_entry(out: &mut Vec<u8>, channels: u8) {
    // OpusHead (RFC 7845 §5.1): version 1, channels, pre-skip, input rate 48 kHz, gain 0,
    // channel mapping family 0 (mono or stereo).
    let mut opus_head = [0u8; 19];
    opus_head[..8].copy_from_slice(b"OpusHead");
    opus_head[8] = 1;
    opus_head[9] = channels;
    opus_head[10..12].copy_from_slice(&OPUS_PRE_SKIP.to_le_bytes());
    opus_head[12..16].copy_from_slice(&48_000u32.to_le_bytes());
    put_master(out, TRACK_ENTRY, |entry| {
        put_uint(entry, TRACK_NUMBER, AUDIO_TRACK.into());
        put_uint(entry, TRACK_UID, AUDIO_TRACK.into());
        put_uint(entry, TRACK_TYPE, 2);
        put_uint(entry, FLAG_LACING, 0);
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
        for video in [
            None,
            Some(FrameSize {
                width: 16383,
                height: 1,
            }),
        ] {
            for audio_channels in [None, Some(1), Some(2)] {
                let head = Head::build(&HeadValues {
                    segment_size: Some((1 << 56) - 2),
                    cues_position: u64::MAX,
                    duration_ms: 1e9,
                    video,
                    audio_channels,
                });
                assert_eq!(head.bytes.len(), placeholder.bytes.len());
                assert_eq!(head.segment_data_offset, placeholder.segment_data_offset);
            }
        }
    }
}
