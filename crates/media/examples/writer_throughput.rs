//! The recording writer's throughput against raw AES-256-GCM in the same run (the issue's
//! target: at least 70%). Usage: `writer_throughput [MiB]` (default 256); run it in release.
//!
//! Every figure counts media payload bytes (1200-byte frames), in MB/s of 10^6 bytes, best of
//! three rounds.

use std::fs::File;
use std::hint::black_box;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use bytes::Bytes;
use confide_media::segment::SEAL_BYTES;
use confide_media::{DataKey, Frame, SegmentHeader, SegmentReader, SegmentWriter, Sink, Track};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use uuid::Uuid;

const FRAME_LEN: usize = 1200;
/// Simulated media rate for the synced run: a 2.5 Mbit/s video call.
const BITS_PER_SECOND: u64 = 2_500_000;
const ROUNDS: usize = 3;
const RECORDING: Uuid = Uuid::from_u128(1);

/// A file that is written but never synced: the writer's CPU cost plus the page cache.
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

/// Drops everything: the writer's CPU cost alone.
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 256,
    };
    let frames = mib * 1024 * 1024 / FRAME_LEN;
    let payload_bytes = (frames * FRAME_LEN) as f64;
    let mut rng = StdRng::seed_from_u64(1);
    let key = DataKey::generate(&mut rng);
    let mut payload = vec![0u8; FRAME_LEN];
    rng.fill_bytes(&mut payload);
    let payload = Bytes::from(payload);
    let dir = tempfile::tempdir()?;
    println!("{frames} frames of {FRAME_LEN} bytes ({mib} MiB), best of {ROUNDS} rounds, MB = 10^6 bytes");

    let mut best = [Duration::MAX; 5];
    let mut segment = 0;
    for _ in 0..ROUNDS {
        let times = [
            raw_aes_gcm(frames * FRAME_LEN),
            write(&key, frames, &payload, segment, Discard)?,
            write_unsynced(&key, frames, &payload, segment + 1, dir.path())?,
            write_synced(&key, frames, &payload, segment + 2, dir.path())?,
            read_back(&key, frames, segment + 2, dir.path())?,
        ];
        for (best, time) in best.iter_mut().zip(times) {
            *best = (*best).min(time);
        }
        segment += 3;
    }

    let rate = |time: Duration| payload_bytes / time.as_secs_f64() / 1e6;
    let raw = rate(best[0]);
    println!("raw AES-256-GCM, 256 KiB chunks in memory   {raw:8.0} MB/s");
    let labels = [
        "writer, discarding sink (CPU only)",
        "writer to file, no sync",
        "writer to file, sync_data per chunk",
    ];
    for (label, time) in labels.iter().zip(&best[1..4]) {
        let mbs = rate(*time);
        println!("{label:<43} {mbs:8.0} MB/s  {:5.1}% of raw", 100.0 * mbs / raw);
    }
    println!(
        "reader from file (decrypt + verify + parse)  {:8.0} MB/s",
        rate(best[4])
    );
    Ok(())
}

/// The same number of payload bytes through bare AES-256-GCM, one 256 KiB message at a time.
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

fn write<S: Sink>(
    key: &DataKey,
    frames: usize,
    payload: &Bytes,
    segment: u32,
    sink: S,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut writer = SegmentWriter::new(sink, key, header(segment))?;
    for i in 0..frames {
        writer.push(&frame(i, payload))?;
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
) -> Result<Duration, Box<dyn std::error::Error>> {
    let path = dir.join(format!("seg-{segment}"));
    let elapsed = write(key, frames, payload, segment, NoSync(File::create_new(&path)?))?;
    std::fs::remove_file(&path)?;
    Ok(elapsed)
}

/// As a recorder runs: a file synced after every chunk, ticked with simulated media time.
fn write_synced(
    key: &DataKey,
    frames: usize,
    payload: &Bytes,
    segment: u32,
    dir: &Path,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let ms_per_frame = (FRAME_LEN as f64 * 8.0) / BITS_PER_SECOND as f64 * 1000.0;
    let start = Instant::now();
    let path = dir.join(format!("seg-{segment}"));
    let mut writer = SegmentWriter::create(&path, key, header(segment))?;
    for i in 0..frames {
        writer.push(&frame(i, payload))?;
        writer.tick((i as f64 * ms_per_frame) as u64)?;
    }
    writer.finish()?;
    Ok(start.elapsed())
}

/// Reads the synced segment back, checking every frame is there.
fn read_back(
    key: &DataKey,
    frames: usize,
    segment: u32,
    dir: &Path,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let path = dir.join(format!("seg-{segment}"));
    let mut count = 0;
    for frame in SegmentReader::open(&path, key, RECORDING, segment)? {
        black_box(frame?);
        count += 1;
    }
    let elapsed = start.elapsed();
    if count != frames {
        return Err(format!("read back {count} frames of {frames}").into());
    }
    std::fs::remove_file(&path)?;
    Ok(elapsed)
}
