//! The recording writer's throughput against raw AES-256-GCM in the same run (the issue's
//! target: at least 70%). Usage: `writer_throughput [MiB]` (default 256); run it in release.
//!
//! Every figure counts media payload bytes (1200-byte frames, alternating between a call's two
//! participants), in MB/s of 10^6 bytes, best of three rounds. The measuring is
//! [`confide_media::throughput`], which the bench program runs too.

use confide_media::throughput::{self, FRAME_LEN};

const ROUNDS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 256,
    };
    let dir = tempfile::tempdir()?;
    println!(
        "{} frames of {FRAME_LEN} bytes ({mib} MiB), best of {ROUNDS} rounds, MB = 10^6 bytes",
        mib * 1024 * 1024 / FRAME_LEN
    );
    let t = throughput::measure(mib, ROUNDS, dir.path())?;
    let raw = t.mb_per_s(t.raw_aes_gcm);
    println!("raw AES-256-GCM, 256 KiB chunks in memory   {raw:8.0} MB/s");
    let labels = [
        ("writer, discarding sink (CPU only)", t.writer_cpu),
        ("writer to file, no sync", t.writer_unsynced),
        ("writer to file, sync_data per chunk", t.writer_synced),
    ];
    for (label, time) in labels {
        println!(
            "{label:<43} {:8.0} MB/s  {:5.1}% of raw",
            t.mb_per_s(time),
            100.0 * t.ratio(time)
        );
    }
    println!(
        "reader from file (decrypt + verify + parse)  {:8.0} MB/s",
        t.mb_per_s(t.reader)
    );
    Ok(())
}
