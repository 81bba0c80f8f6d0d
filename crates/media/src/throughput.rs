//! The recording writer's throughput against raw AES-256-GCM in the same run (the target:
//! at least 70%), shared by the `writer_throughput` example and the bench program.
//!
//! Every figure counts media payload bytes: [`FRAME_LEN`]-byte frames alternating between a call's
//! two participants, best of the given rounds, so that both measurements see the machine at its
//! least disturbed.

use std::fs::File;
use std::hint::black_box;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use uuid::Uuid;

use crate::segment::{SEAL_BYTES, SegmentError, SegmentReader, SegmentWriter, Sink, WriteError};
use crate::sfu::ParticipantId;
use crate::{DataKey, Frame, SegmentHeader, Track};

/// Payload bytes per frame: about one RTP packet's worth.
pub const FRAME_LEN: usize = 1200;
/// Simulated media rate for the synced run: a 2.5 Mbit/s video call.
const BITS_PER_SECOND: u64 = 2_500_000;
const RECORDING: Uuid = Uuid::from_u128(1);
/// A call's two participants, whose frames alternate.
const SENDERS: [ParticipantId; 2] = [
    ParticipantId(Uuid::from_u128(2)),
    ParticipantId(Uuid::from_u128(3)),
];

#[derive(Debug, thiserror::Error)]
pub enum ThroughputError {
    #[error("writing a segment: {0}")]
    Write(#[from] WriteError),
    #[error("reading a segment back: {0}")]
    Read(#[from] SegmentError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("read back {read} frames of {written}")]
    Missing { read: usize, written: usize },
}

/// Best times over the rounds for the same payload bytes.
#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    pub payload_bytes: u64,
    /// Bare AES-256-GCM over the payload in [`SEAL_BYTES`] messages, in memory.
    pub raw_aes_gcm: Duration,
    /// The writer into a sink that drops everything: its CPU cost alone.
    pub writer_cpu: Duration,
    /// The writer into a file that is never synced: CPU plus the page cache.
    pub writer_unsynced: Duration,
    /// As a recorder runs: a file synced after every chunk, ticked with simulated media time.
    pub writer_synced: Duration,
    /// Reading the synced segment back (decrypt, verify, parse).
    pub reader: Duration,
}

impl Throughput {
    /// MB/s (10^6 bytes) of payload for one of the times.
    pub fn mb_per_s(&self, time: Duration) -> f64 {
        self.payload_bytes as f64 / time.as_secs_f64().max(1e-9) / 1e6
    }

    /// The writer's rate as a fraction of raw AES-256-GCM's.
    pub fn ratio(&self, time: Duration) -> f64 {
        self.raw_aes_gcm.as_secs_f64() / time.as_secs_f64().max(1e-9)
    }
}

/// Measures `mib` MiB of frames through each path, `rounds` times, using files under `dir`.
pub fn measure(mib: usize, rounds: usize, dir: &Path) -> Result<Throughput, ThroughputError> {
    let frames = mib * 1024 * 1024 / FRAME_LEN;
    let mut rng = StdRng::seed_from_u64(1);
    let key = DataKey::generate(&mut rng);
    let mut payload = vec![0u8; FRAME_LEN];
    rng.fill_bytes(&mut payload);
    let payload = Bytes::from(payload);

    let mut best = [Duration::MAX; 5];
    let mut segment = 0;
    for _ in 0..rounds.max(1) {
        let times = [
            raw_aes_gcm(frames * FRAME_LEN),
            write(&key, frames, &payload, segment, Discard)?,
            write_unsynced(&key, frames, &payload, segment + 1, dir)?,
            write_synced(&key, frames, &payload, segment + 2, dir)?,
            read_back(&key, frames, segment + 2, dir)?,
        ];
        for (best, time) in best.iter_mut().zip(times) {
            *best = (*best).min(time);
        }
        segment += 3;
    }
    Ok(Throughput {
        payload_bytes: (frames * FRAME_LEN) as u64,
        raw_aes_gcm: best[0],
        writer_cpu: best[1],
        writer_unsynced: best[2],
        writer_synced: best[3],
        reader: best[4],
    })
}

/// A file that is written but never synced.
struct NoSync(File);

impl Write for NoSync {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Sink for NoSync {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Drops everything.
struct Discard;

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for Discard {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The same number of payload bytes through bare AES-256-GCM, one chunk-sized message at a time.
fn raw_aes_gcm(bytes: usize) -> Duration {
    let cipher = Aes256Gcm::new(&[7u8; 32].into());
    let mut chunk = vec![0x5au8; SEAL_BYTES];
    let start = Instant::now();
    for i in 0..bytes.div_ceil(SEAL_BYTES) as u64 {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&i.to_be_bytes());
        let tag = cipher
            .encrypt_inout_detached(&nonce.into(), b"", chunk.as_mut_slice().into())
            .expect("within AES-GCM's limits");
        black_box(tag);
    }
    start.elapsed()
}

fn header(segment: u32) -> SegmentHeader {
    SegmentHeader {
        recording: RECORDING,
        segment,
        created_at_ms: 0,
    }
}

fn frame(i: usize, payload: &Bytes) -> Frame {
    Frame {
        track: Track::Video,
        timestamp_us: i as u64,
        keyframe: false,
        payload: payload.clone(),
    }
}

fn write<S: Sink + Send + 'static>(
    key: &DataKey,
    frames: usize,
    payload: &Bytes,
    segment: u32,
    sink: S,
) -> Result<Duration, ThroughputError> {
    let start = Instant::now();
    let mut writer = SegmentWriter::new(sink, key, header(segment))?;
    for i in 0..frames {
        writer.push(SENDERS[i % 2], &frame(i, payload))?;
    }
    writer.finish()?;
    Ok(start.elapsed())
}

fn write_unsynced(
    key: &DataKey,
    frames: usize,
    payload: &Bytes,
    segment: u32,
    dir: &Path,
) -> Result<Duration, ThroughputError> {
    let path = dir.join(format!("seg-{segment}"));
    let elapsed = write(key, frames, payload, segment, NoSync(File::create_new(&path)?))?;
    std::fs::remove_file(&path)?;
    Ok(elapsed)
}

fn write_synced(
    key: &DataKey,
    frames: usize,
    payload: &Bytes,
    segment: u32,
    dir: &Path,
) -> Result<Duration, ThroughputError> {
    let ms_per_frame = (FRAME_LEN as f64 * 8.0) / BITS_PER_SECOND as f64 * 1000.0;
    let start = Instant::now();
    let path = dir.join(format!("seg-{segment}"));
    let mut writer = SegmentWriter::create(&path, key, header(segment))?;
    for i in 0..frames {
        writer.push(SENDERS[i % 2], &frame(i, payload))?;
        writer.tick((i as f64 * ms_per_frame) as u64)?;
    }
    writer.finish()?;
    Ok(start.elapsed())
}

/// Reads the synced segment back, checking every frame is there.
fn read_back(key: &DataKey, frames: usize, segment: u32, dir: &Path) -> Result<Duration, ThroughputError> {
    let start = Instant::now();
    let path = dir.join(format!("seg-{segment}"));
    let mut read = 0;
    for frame in SegmentReader::open(&path, key, RECORDING, segment)? {
        black_box(frame?);
        read += 1;
    }
    let elapsed = start.elapsed();
    if read != frames {
        return Err(ThroughputError::Missing {
            read,
            written: frames,
        });
    }
    std::fs::remove_file(&path)?;
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run goes through every path and reads back every frame it wrote.
    #[test]
    fn measures_every_path() {
        let dir = tempfile::tempdir().unwrap();
        let t = measure(1, 1, dir.path()).unwrap();
        assert_eq!(t.payload_bytes, (1024 * 1024 / FRAME_LEN * FRAME_LEN) as u64);
        for time in [
            t.raw_aes_gcm,
            t.writer_cpu,
            t.writer_unsynced,
            t.writer_synced,
            t.reader,
        ] {
            assert!(time > Duration::ZERO && time < Duration::MAX);
        }
        assert!(t.mb_per_s(t.raw_aes_gcm) > 0.0);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "files are removed"
        );
    }
}
