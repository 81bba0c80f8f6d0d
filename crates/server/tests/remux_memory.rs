//! The remux's memory stays bounded whatever the length of the call: a 10-minute recording of two
//! participants at 2.5 Mbit/s (about 190 MB, six times the bound) is remuxed into a playback copy, sealed
//! and uploaded, and the heap never grows by more than a few parts of the upload. (Ten minutes, not more:
//! the crypto runs unoptimised in test builds, at a few MB/s.) Its own test binary, with a counting
//! allocator, so that no other test's allocations count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use confide_domain::RecordingId;
use confide_media::sfu::ParticipantId;
use confide_media::sfu::recorder::segment_path;
use confide_media::{DataKey, Frame, MasterKey, SegmentHeader, SegmentWriter, Track};
use confide_server::recordings::{BLOCK, PlaybackKey, Recordings, STRIDE};
use uuid::Uuid;

/// Counts the bytes allocated now and the most there ever were.
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: passed through to the system allocator with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as the caller promises for `ptr`, `layout` and `new_size`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now =
                    NOW.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                NOW.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MINUTES: u64 = 10;
const BITS_PER_SECOND: u64 = 2_500_000;
const FPS: u64 = 25;
/// What the heap may grow by while the copy is made.
const BOUND: usize = 32 * 1024 * 1024;

/// Writes `MINUTES` of audio (20 ms Opus) and video (VP8, a keyframe every 2 s) from two participants,
/// `BITS_PER_SECOND` in all, as one segment; returns its size.
fn write_recording(dir: &std::path::Path, recording: Uuid, key: &DataKey) -> u64 {
    let people = [ParticipantId(Uuid::new_v4()), ParticipantId(Uuid::new_v4())];
    let audio_len = 100;
    let per_frame = (BITS_PER_SECOND / 8 / FPS) as usize / people.len() - audio_len * 2;
    let mut keyframe = vec![0x5au8; per_frame];
    // Frame tag: keyframe, version 0, shown; the start code; 640 × 480.
    keyframe[..10].copy_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
    let keyframe = Bytes::from(keyframe);
    let interframe = Bytes::from(vec![0x5bu8; per_frame]);
    let mut opus = vec![0x33u8; audio_len];
    opus[0] = 15 << 3;
    let opus = Bytes::from(opus);

    let path = segment_path(dir, recording, 0);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let header = SegmentHeader {
        recording,
        segment: 0,
        created_at_ms: 0,
    };
    let mut writer = SegmentWriter::create(&path, key, header).unwrap();
    let start_us = 1_750_000_000_000_000u64;
    let frames = MINUTES * 60 * FPS;
    for n in 0..frames {
        let at = start_us + n * 1_000_000 / FPS;
        for person in people {
            let key = n % (2 * FPS) == 0;
            let video = Frame {
                track: Track::Video,
                timestamp_us: at,
                keyframe: key,
                payload: if key { keyframe.clone() } else { interframe.clone() },
            };
            writer.push(person, &video).unwrap();
            for i in 0..2 {
                let audio = Frame {
                    track: Track::Audio,
                    timestamp_us: at + i * 20_000,
                    keyframe: false,
                    payload: opus.clone(),
                };
                writer.push(person, &audio).unwrap();
            }
        }
    }
    writer.finish().unwrap();
    std::fs::metadata(&path).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_recording_is_remuxed_and_uploaded_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let segments = dir.path().join("recordings");
    let blobs = dir.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let recording = RecordingId::from_uuid(Uuid::new_v4());
    let data = Arc::new(DataKey::generate(&mut rand::rng()));
    let written = write_recording(&segments, recording.as_uuid(), &data);
    assert!(
        written >= MINUTES * 60 * BITS_PER_SECOND / 8,
        "the recording is {written} bytes"
    );

    let objects: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&blobs).unwrap());
    let recordings = Recordings::new(objects, MasterKey::from_bytes([7; 32]), segments.clone());
    let (_, key) = PlaybackKey::generate();

    let before = NOW.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let made = recordings
        .make_copy(recording, &data, &key, &[0], None)
        .await
        .unwrap();
    let took = started.elapsed();
    let grew = PEAK.load(Ordering::Relaxed) - before;

    eprintln!(
        "remuxed {} MB of segments into a {} MB copy ({} min) in {took:.1?}; the heap grew by at most {:.1} MiB",
        written / 1_000_000,
        made.len / 1_000_000,
        made.summary.duration_ms / 60_000,
        grew as f64 / (1024.0 * 1024.0)
    );
    assert!(
        made.summary.duration_ms + 1000 >= MINUTES * 60_000,
        "{:?}",
        made.summary
    );
    assert!(made.len >= written * 9 / 10, "the copy is {} bytes", made.len);
    let stored = std::fs::metadata(blobs.join(made.path.as_ref())).unwrap().len();
    assert_eq!(
        stored,
        made.len + made.len.div_ceil(BLOCK) * (STRIDE - BLOCK),
        "the uploaded object holds every sealed block"
    );
    let scratch: Vec<_> = std::fs::read_dir(segments.join(".remux")).unwrap().collect();
    assert!(scratch.is_empty(), "the scratch file is removed: {scratch:?}");
    assert!(
        grew < BOUND,
        "the heap grew by {grew} bytes while remuxing, more than {BOUND}"
    );
}
