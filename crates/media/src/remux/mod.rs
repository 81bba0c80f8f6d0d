//! After the call: a recording's segments become one WebM file (VP8 + Opus) for playback,
//! without transcoding.
//!
//! [`remux_segments`] reads the segments in order and feeds a [`WebmWriter`]:
//!
//! - Time: every frame's timestamp is on the recording's one clock, so a gap between segments
//!   (a reconnect, a restart) stays a gap and the file lasts as long as the call. The file
//!   starts at 0 at the earliest frame written.
//! - Order: each track must arrive in time order, as the segment log stores it. Across tracks
//!   frames are stored as they arrived, so they are merged back into time order with a frame
//!   held for at most [`REORDER_WINDOW_US`] of input; a frame later than that is an error.
//! - Video runs: a segment begins after a switch, reconnect or restart, so its video cannot
//!   lean on an earlier segment's frames. Video frames before a segment's first VP8 keyframe
//!   are dropped, since a decoder cannot start there, and counted.
//! - Tracks: the video track is declared if any segment has video, the audio track if any has
//!   audio; both are settled when the file is finished.
//!
//! The file layout is described in `webm.rs`. It is written front to back except for one
//! rewrite of its head (see [`WebmWriter`]), which is what keeping it encrypted at rest has to
//! allow for.

mod codec;
mod webm;

use std::collections::VecDeque;
use std::io::{Seek, Write};

pub use codec::FrameSize;
pub use webm::{CLUSTER_SPAN_MS, WebmError, WebmSummary, WebmWriter};

use crate::segment::{Frame, Track};

/// How far the input may run ahead of a held frame before it is written: more than enough for
/// a video frame that waited on retransmissions while audio went on being stored.
pub const REORDER_WINDOW_US: u64 = 2_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RemuxError<E> {
    #[error("reading the recording: {0}")]
    Read(#[source] E),
    #[error(
        "{track:?} frame at {timestamp_us} µs comes after one at {after_us} µs: each track must be \
         in time order, and the tracks within {} ms of each other", REORDER_WINDOW_US / 1000
    )]
    OutOfOrder {
        track: Track,
        timestamp_us: u64,
        after_us: u64,
    },
    #[error(transparent)]
    Webm(#[from] WebmError),
}

/// What [`remux_segments`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemuxSummary {
    /// From the first frame written to the end of the last, gaps included.
    pub duration_ms: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    /// Video frames that came before their segment's first keyframe.
    pub dropped_video_frames: u64,
    /// From the first keyframe; `None` when the recording has no video.
    pub video_size: Option<FrameSize>,
}

/// Remuxes a recording into a WebM file written to `out` from its current position. `segments`
/// come in recording order, each the frames of one segment in stored order; an `Err` from
/// either stops the remux with [`RemuxError::Read`]. Whether a damaged segment should end
/// there instead (a segment cut short by a crash does, by design) is the caller's decision:
/// stop that segment's frames before the error. On any error the output is unusable.
pub fn remux_segments<I, S, E, W>(segments: I, out: W) -> Result<RemuxSummary, RemuxError<E>>
where
    I: IntoIterator<Item = Result<S, E>>,
    S: IntoIterator<Item = Result<Frame, E>>,
    W: Write + Seek,
{
    let mut webm = WebmWriter::new(out)?;
    let mut merge = Interleaver::default();
    let mut dropped_video_frames = 0;
    for segment in segments {
        let mut awaiting_keyframe = true;
        for frame in segment.map_err(RemuxError::Read)? {
            let frame = frame.map_err(RemuxError::Read)?;
            if frame.track == Track::Video && awaiting_keyframe {
                if codec::vp8_keyframe(&frame.payload).is_none() {
                    dropped_video_frames += 1;
                    continue;
                }
                awaiting_keyframe = false;
            }
            merge.push(frame)?;
            while let Some(frame) = merge.pop(false) {
                webm.push(frame.track, frame.timestamp_us, &frame.payload)?;
            }
        }
    }
    while let Some(frame) = merge.pop(true) {
        webm.push(frame.track, frame.timestamp_us, &frame.payload)?;
    }
    let summary = webm.finish()?;
    Ok(RemuxSummary {
        duration_ms: summary.duration_ms,
        video_frames: summary.video_frames,
        audio_frames: summary.audio_frames,
        dropped_video_frames,
        video_size: summary.video_size,
    })
}

/// Merges two tracks, each already in time order, into one time order.
#[derive(Default)]
struct Interleaver {
    /// Held frames, audio then video.
    queues: [VecDeque<Frame>; 2],
    last_in: [Option<u64>; 2],
    newest_us: u64,
    released_us: Option<u64>,
}

impl Interleaver {
    fn push<E>(&mut self, frame: Frame) -> Result<(), RemuxError<E>> {
        let slot = slot(frame.track);
        let after = self.last_in[slot].max(self.released_us);
        if let Some(after_us) = after
            && frame.timestamp_us < after_us
        {
            return Err(RemuxError::OutOfOrder {
                track: frame.track,
                timestamp_us: frame.timestamp_us,
                after_us,
            });
        }
        self.last_in[slot] = Some(frame.timestamp_us);
        self.newest_us = self.newest_us.max(frame.timestamp_us);
        self.queues[slot].push_back(frame);
        Ok(())
    }

    /// The next frame in time order, if it is settled: nothing earlier can still come on the
    /// other track. With `flush`, the input has ended and every held frame is settled.
    fn pop(&mut self, flush: bool) -> Option<Frame> {
        let [audio, video] = &self.queues;
        let slot = match (audio.front(), video.front()) {
            // The smaller head is settled because each track is in order. On a tie video goes
            // first, so that a keyframe's cluster holds the audio of the same instant.
            (Some(a), Some(v)) => slot(if v.timestamp_us <= a.timestamp_us {
                Track::Video
            } else {
                Track::Audio
            }),
            (Some(f), None) | (None, Some(f)) => {
                if !flush && f.timestamp_us.saturating_add(REORDER_WINDOW_US) > self.newest_us {
                    return None;
                }
                slot(f.track)
            }
            (None, None) => return None,
        };
        let frame = self.queues[slot].pop_front()?;
        self.released_us = Some(frame.timestamp_us);
        Some(frame)
    }
}

fn slot(track: Track) -> usize {
    match track {
        Track::Audio => 0,
        Track::Video => 1,
    }
}
