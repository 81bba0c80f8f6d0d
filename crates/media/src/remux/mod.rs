//! After the call: a recording's segments become one WebM file (VP8 + Opus) for playback,
//! without transcoding.
//!
//! [`remux_segments`] reads the segments in order and feeds a [`WebmWriter`]:
//!
//! - Tracks: one per participant and kind — the clinician's audio, the clinician's video, the
//!   patient's audio, … — since media can't be mixed without transcoding. Each is named
//!   "<participant id> audio" or "<participant id> video", and [`RemuxSummary::tracks`] lists
//!   them, so the server can label them. A track is declared if any segment has a frame of it,
//!   and numbered in the order the tracks first play.
//! - Which tracks: [`RemuxOptions`] picks whose audio and whose video go in. A browser plays
//!   only one audio and one video track of a file (Chromium picks the first of each; choosing
//!   another through `audioTracks`/`videoTracks` is behind a flag), so a file with everyone's
//!   tracks is for export and desktop players. For playback in a page, remux one file per
//!   participant ([`RemuxOptions::participant`]) and play the files side by side, one media
//!   element each, aligned by [`RemuxSummary::start_us`].
//! - Time: every frame's timestamp is on the recording's one clock, so a gap between segments
//!   (a reconnect, a restart) stays a gap and the file lasts as long as the call. The file
//!   starts at 0 at the earliest frame written.
//! - Order: each track must arrive in time order, as the segment log stores it. Across tracks
//!   frames are stored as they arrived, so they are merged back into time order with a frame
//!   held until the input is [`REORDER_WINDOW_US`] past it; a frame later than that is an error.
//! - Video runs: a segment begins after a switch, reconnect or restart, so its video cannot
//!   lean on an earlier segment's frames. A participant's video frames before their first VP8
//!   keyframe in a segment are dropped, since a decoder cannot start there, and counted.
//!
//! The file layout is described in `webm.rs`. It is written front to back except for one
//! rewrite of its head (see [`WebmWriter`]), which is what keeping it encrypted at rest has to
//! allow for.

mod codec;
mod webm;

use std::collections::{HashSet, VecDeque};
use std::io::{Seek, Write};

pub use codec::FrameSize;
pub use webm::{CLUSTER_SPAN_MS, MAX_TRACKS, TrackKey, TrackSummary, WebmError, WebmSummary, WebmWriter};

use crate::segment::{Frame, StoredFrame, Track};
use crate::sfu::ParticipantId;

/// How far the input may run ahead of a held frame before it is written: more than enough for
/// a video frame that waited on retransmissions while audio went on being stored.
pub const REORDER_WINDOW_US: u64 = 2_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RemuxError<E> {
    #[error("reading the recording: {0}")]
    Read(#[source] E),
    #[error(
        "{track:?} frame of {participant:?} at {timestamp_us} µs comes after one at {after_us} µs: \
         each track must be in time order, and the tracks within {} ms of each other",
        REORDER_WINDOW_US / 1000
    )]
    OutOfOrder {
        participant: ParticipantId,
        track: Track,
        timestamp_us: u64,
        after_us: u64,
    },
    #[error(transparent)]
    Webm(#[from] WebmError),
}

/// Whose tracks of one kind go into the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Include {
    #[default]
    Everyone,
    Only(ParticipantId),
    Nobody,
}

impl Include {
    fn admits(self, participant: ParticipantId) -> bool {
        match self {
            Include::Everyone => true,
            Include::Only(only) => only == participant,
            Include::Nobody => false,
        }
    }
}

/// Which tracks a remux writes; by default every participant's audio and video.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemuxOptions {
    pub audio_of: Include,
    pub video_of: Include,
}

impl RemuxOptions {
    /// One participant's audio and video: what a browser plays whole (see the module docs).
    pub fn participant(participant: ParticipantId) -> Self {
        Self {
            audio_of: Include::Only(participant),
            video_of: Include::Only(participant),
        }
    }

    /// One participant's video with everyone's audio, for players that mix audio tracks.
    pub fn video_of(participant: ParticipantId) -> Self {
        Self {
            audio_of: Include::Everyone,
            video_of: Include::Only(participant),
        }
    }

    fn admits(&self, frame: &StoredFrame) -> bool {
        match frame.track {
            Track::Audio => self.audio_of.admits(frame.sender),
            Track::Video => self.video_of.admits(frame.sender),
        }
    }
}

/// What [`remux_segments`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemuxSummary {
    /// From the first frame written to the end of the last, gaps included.
    pub duration_ms: u64,
    /// The first frame's time on the recording's clock: where the file's 0 is. Files remuxed
    /// from one recording with different options line up by it.
    pub start_us: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    /// Video frames that came before their segment's first keyframe from their sender.
    pub dropped_video_frames: u64,
    /// The first video track's size, from its first keyframe; `None` when the file has no video.
    pub video_size: Option<FrameSize>,
    /// Every track of the file, in number order: whose it is, what kind, how many frames.
    pub tracks: Vec<TrackSummary>,
}

/// Remuxes a recording into a WebM file with every participant's tracks, written to `out` from
/// its current position; see [`remux_segments_with`].
pub fn remux_segments<I, S, E, W>(segments: I, out: W) -> Result<RemuxSummary, RemuxError<E>>
where
    I: IntoIterator<Item = Result<S, E>>,
    S: IntoIterator<Item = Result<StoredFrame, E>>,
    W: Write + Seek,
{
    remux_segments_with(segments, out, RemuxOptions::default())
}

/// Remuxes the tracks `options` picks from a recording into a WebM file written to `out` from
/// its current position. `segments` come in recording order, each the frames of one segment in
/// stored order (a [`SegmentReader`](crate::SegmentReader) is one); an `Err` from either stops
/// the remux with [`RemuxError::Read`]. Whether a damaged segment should end there instead (a
/// segment cut short by a crash does, by design) is the caller's decision: stop that segment's
/// frames before the error. On any error the output is unusable. A recording with none of the
/// picked tracks is [`WebmError::Empty`].
pub fn remux_segments_with<I, S, E, W>(
    segments: I,
    out: W,
    options: RemuxOptions,
) -> Result<RemuxSummary, RemuxError<E>>
where
    I: IntoIterator<Item = Result<S, E>>,
    S: IntoIterator<Item = Result<StoredFrame, E>>,
    W: Write + Seek,
{
    let mut webm = WebmWriter::new(out)?;
    let mut merge = Interleaver::default();
    let mut dropped_video_frames = 0;
    for segment in segments {
        // Whose video has reached a keyframe in this segment.
        let mut started: HashSet<ParticipantId> = HashSet::new();
        for frame in segment.map_err(RemuxError::Read)? {
            let frame = frame.map_err(RemuxError::Read)?;
            if !options.admits(&frame) {
                continue;
            }
            if frame.track == Track::Video && !started.contains(&frame.sender) {
                if codec::vp8_keyframe(&frame.payload).is_none() {
                    dropped_video_frames += 1;
                    continue;
                }
                started.insert(frame.sender);
            }
            merge.push(frame)?;
            while let Some((track, frame)) = merge.pop(false) {
                webm.push(track, frame.timestamp_us, &frame.payload)?;
            }
        }
    }
    while let Some((track, frame)) = merge.pop(true) {
        webm.push(track, frame.timestamp_us, &frame.payload)?;
    }
    let summary = webm.finish()?;
    Ok(RemuxSummary {
        duration_ms: summary.duration_ms,
        start_us: summary.start_us,
        video_frames: summary.video_frames,
        audio_frames: summary.audio_frames,
        dropped_video_frames,
        video_size: summary.video_size,
        tracks: summary.tracks,
    })
}

/// Merges tracks, each already in time order, into one time order.
#[derive(Default)]
struct Interleaver {
    /// Held frames, a queue per track, with the time of the track's last frame in.
    queues: Vec<(TrackKey, VecDeque<Frame>, u64)>,
    newest_us: u64,
    released_us: Option<u64>,
}

impl Interleaver {
    fn push<E>(&mut self, stored: StoredFrame) -> Result<(), RemuxError<E>> {
        let StoredFrame { sender, frame } = stored;
        let key = TrackKey {
            participant: sender,
            kind: frame.track,
        };
        let index = match self.queues.iter().position(|(k, _, _)| *k == key) {
            Some(index) => index,
            None => {
                self.queues.push((key, VecDeque::new(), 0));
                self.queues.len() - 1
            }
        };
        let (_, queue, last_in) = &mut self.queues[index];
        let after_us = (*last_in).max(self.released_us.unwrap_or(0));
        if frame.timestamp_us < after_us {
            return Err(RemuxError::OutOfOrder {
                participant: sender,
                track: frame.track,
                timestamp_us: frame.timestamp_us,
                after_us,
            });
        }
        *last_in = frame.timestamp_us;
        self.newest_us = self.newest_us.max(frame.timestamp_us);
        queue.push_back(frame);
        Ok(())
    }

    /// The next frame in time order, if it is settled: the input has run [`REORDER_WINDOW_US`]
    /// past it, so no track can still bring an earlier one. With `flush`, the input has ended
    /// and every held frame is settled. On a tie video goes first, so that a keyframe's cluster
    /// holds the audio of the same instant; then the lower participant id.
    fn pop(&mut self, flush: bool) -> Option<(TrackKey, Frame)> {
        let (index, head_us) = self
            .queues
            .iter()
            .enumerate()
            .filter_map(|(i, (key, queue, _))| {
                let head = queue.front()?;
                Some((i, head.timestamp_us, key.kind == Track::Audio, key.participant))
            })
            .min_by_key(|&(_, at, audio, participant)| (at, audio, participant))
            .map(|(i, at, _, _)| (i, at))?;
        if !flush && head_us.saturating_add(REORDER_WINDOW_US) > self.newest_us {
            return None;
        }
        let (key, queue, _) = &mut self.queues[index];
        let frame = queue.pop_front()?;
        self.released_us = Some(frame.timestamp_us);
        Some((*key, frame))
    }
}
