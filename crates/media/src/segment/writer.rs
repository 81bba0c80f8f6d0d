use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::AeadInOut;

use super::{
    AUTHENTICATED_HEADER_LEN, CHUNK_HEAD_LEN, Frame, HEADER_NONCE_CHUNK, KIND_DATA, KIND_FINAL,
    MAX_FRAME_LEN, MAX_SENDERS, RECORD_HEAD_LEN, SEAL_BYTES, SEAL_INTERVAL_MS, SENDER_RECORD_LEN,
    SegmentHeader, TAG_LEN, WriteError, chunk_aad, chunk_nonce, encode_chunk_head, encode_sender,
    frame_record_head,
};
use crate::keys::DataKey;
use crate::sfu::ParticipantId;

/// Where a segment goes: written append-only, and made durable after each sealed chunk.
pub trait Sink: Write {
    /// Makes everything written so far survive a power loss.
    fn sync(&mut self) -> io::Result<()>;

    /// A way to make what was written durable from another thread, so that a slow sync never
    /// holds up writing the next chunk. Without one, the writer syncs after each write itself.
    fn background_sync(&self) -> io::Result<Option<BackgroundSync>> {
        Ok(None)
    }
}

/// Makes a sink's writes durable, called from a thread of its own.
pub struct BackgroundSync(Box<dyn FnMut() -> io::Result<()> + Send>);

impl BackgroundSync {
    pub fn new(sync: impl FnMut() -> io::Result<()> + Send + 'static) -> Self {
        Self(Box::new(sync))
    }
}

impl Sink for File {
    fn sync(&mut self) -> io::Result<()> {
        // The file's length changes with every chunk, and `sync_data` covers that metadata too.
        self.sync_data()
    }

    fn background_sync(&self) -> io::Result<Option<BackgroundSync>> {
        let file = self.try_clone()?;
        Ok(Some(BackgroundSync::new(move || file.sync_data())))
    }
}

/// In memory, for tests and for building a segment to send elsewhere: nothing to make durable.
impl Sink for Vec<u8> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Appends frames to one segment. The caller drives time through [`SegmentWriter::tick`]; a
/// writer dropped without [`SegmentWriter::finish`] leaves a segment that reads as truncated
/// after its last sealed chunk, exactly as after a crash.
///
/// A sealed chunk is written at once, so a killed process loses only what was not yet sealed.
/// Syncing (which guards against power loss, and can take seconds on a busy disk) happens on a
/// thread of the writer's own, so it never delays the next write; a sync that fails is reported
/// by the writer's next call, and the writer takes nothing more.
pub struct SegmentWriter<S: Sink> {
    /// `None` once finished.
    sink: Option<S>,
    syncer: Option<Syncer>,
    cipher: Aes256Gcm,
    header: [u8; AUTHENTICATED_HEADER_LEN],
    segment: u32,
    /// The next chunk: room for its head, then the frame records buffered so far.
    chunk: Vec<u8>,
    next_chunk: u64,
    frames: u64,
    /// The participants named so far, by sender number.
    senders: Vec<ParticipantId>,
    last_seal_ms: u64,
    /// Set once a write has failed: a partial chunk may be on disk and rewriting that chunk
    /// index would reuse its nonce, so the writer stops for good.
    failed: bool,
}

/// The thread that syncs a sink's writes. A request that finds one already waiting is dropped:
/// the waiting sync starts after the write that asked for it, so it covers that write too.
struct Syncer {
    requests: SyncSender<()>,
    error: Arc<Mutex<Option<io::Error>>>,
}

impl Syncer {
    fn start(mut sync: BackgroundSync) -> io::Result<Self> {
        let (requests, pending) = sync_channel::<()>(1);
        let error = Arc::new(Mutex::new(None));
        let failed = Arc::clone(&error);
        std::thread::Builder::new()
            .name("confide-segment-sync".into())
            .spawn(move || {
                for () in pending {
                    if let Err(e) = (sync.0)() {
                        *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                        break;
                    }
                }
            })?;
        Ok(Self { requests, error })
    }

    fn request(&self) {
        match self.requests.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            // The thread stopped after a failed sync, which `take_error` reports.
            Err(TrySendError::Disconnected(())) => {}
        }
    }

    fn take_error(&self) -> Option<io::Error> {
        self.error.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl SegmentWriter<File> {
    /// Creates the segment's file, which must not exist yet: an existing file means the segment
    /// index is taken, and reusing it would reuse nonces.
    pub fn create(path: &Path, key: &DataKey, header: SegmentHeader) -> Result<Self, WriteError> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        // The new directory entry must be durable too, or a power loss could drop the whole file.
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Self::new(file, key, header)
    }
}

impl<S: Sink> SegmentWriter<S> {
    /// Writes the segment header to `sink`, which must be empty.
    pub fn new(mut sink: S, key: &DataKey, header: SegmentHeader) -> Result<Self, WriteError> {
        let cipher = key.cipher();
        let authenticated = header.authenticated_bytes();
        let tag = cipher
            .encrypt_inout_detached(
                &chunk_nonce(header.segment, HEADER_NONCE_CHUNK),
                &authenticated,
                (&mut [][..]).into(),
            )
            .expect("an empty message is within AES-GCM's limits");
        sink.write_all(&authenticated)?;
        sink.write_all(&tag)?;
        sink.sync()?;
        let syncer = sink.background_sync()?.map(Syncer::start).transpose()?;
        Ok(Self {
            sink: Some(sink),
            syncer,
            cipher,
            header: authenticated,
            segment: header.segment,
            chunk: new_chunk_buffer(),
            next_chunk: 0,
            frames: 0,
            senders: Vec::new(),
            last_seal_ms: header.created_at_ms,
            failed: false,
        })
    }

    /// Buffers a frame `sender` sent, sealing a chunk once [`SEAL_BYTES`] are buffered.
    pub fn push(&mut self, sender: ParticipantId, frame: &Frame) -> Result<(), WriteError> {
        self.check_usable()?;
        if frame.payload.len() > MAX_FRAME_LEN {
            return Err(WriteError::FrameTooLarge {
                len: frame.payload.len(),
            });
        }
        let number = match self.senders.iter().position(|&s| s == sender) {
            Some(number) => number,
            None if self.senders.len() == MAX_SENDERS => return Err(WriteError::TooManySenders),
            None => {
                let number = self.senders.len();
                self.chunk.reserve(SENDER_RECORD_LEN);
                encode_sender(&mut self.chunk, number as u8, sender);
                self.senders.push(sender);
                number
            }
        };
        let number = u8::try_from(number).expect("at most MAX_SENDERS senders");
        self.chunk.reserve(RECORD_HEAD_LEN + frame.payload.len());
        self.chunk.extend_from_slice(&frame_record_head(frame, number));
        self.chunk.extend_from_slice(&frame.payload);
        self.frames += 1;
        if self.chunk.len() - CHUNK_HEAD_LEN >= SEAL_BYTES {
            self.seal(KIND_DATA)?;
        }
        Ok(())
    }

    /// Seals buffered frames if [`SEAL_INTERVAL_MS`] have passed since the last seal. `now_ms`
    /// is on the clock of the header's `created_at_ms`; a clock that jumps (either way) only
    /// causes an early seal. Call it at least every 100 ms (or with every frame) to keep a crash
    /// from losing more than 1 s.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), WriteError> {
        self.check_usable()?;
        if self.chunk.len() > CHUNK_HEAD_LEN && now_ms.abs_diff(self.last_seal_ms) >= SEAL_INTERVAL_MS {
            self.seal(KIND_DATA)?;
            self.last_seal_ms = now_ms;
        }
        Ok(())
    }

    /// Seals the remaining frames in the final chunk, which marks the segment complete, syncs
    /// it, and hands back the sink.
    pub fn finish(mut self) -> Result<S, WriteError> {
        self.check_usable()?;
        let frames = self.frames;
        self.chunk.extend_from_slice(&frames.to_be_bytes());
        self.seal(KIND_FINAL)?;
        self.flush()?;
        Ok(self.sink.take().expect("checked usable"))
    }

    /// Waits until every sealed chunk is durable.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        self.check_usable()?;
        let sink = self.sink.as_mut().expect("checked usable");
        sink.sync().map_err(|e| self.fail(e))
    }

    fn check_usable(&mut self) -> Result<(), WriteError> {
        if let Some(e) = self.syncer.as_ref().and_then(Syncer::take_error) {
            return Err(self.fail(e));
        }
        if self.failed || self.sink.is_none() {
            Err(WriteError::Failed)
        } else {
            Ok(())
        }
    }

    fn fail(&mut self, e: io::Error) -> WriteError {
        self.failed = true;
        WriteError::Io(e)
    }

    /// Encrypts the buffered chunk in place, writes it, and has it synced.
    fn seal(&mut self, kind: u8) -> Result<(), WriteError> {
        let plaintext_len = self.chunk.len() - CHUNK_HEAD_LEN;
        let head = encode_chunk_head(plaintext_len + TAG_LEN, kind, self.next_chunk);
        self.chunk[..CHUNK_HEAD_LEN].copy_from_slice(&head);
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &chunk_nonce(self.segment, self.next_chunk),
                &chunk_aad(&self.header, &head),
                (&mut self.chunk[CHUNK_HEAD_LEN..]).into(),
            )
            .expect("chunks stay far below AES-GCM's 64 GiB message limit");
        self.chunk.extend_from_slice(&tag);
        // Its nonce is used now: whatever happens next, this chunk index is never sealed again.
        self.next_chunk += 1;

        let sink = self.sink.as_mut().expect("checked usable");
        let written = sink.write_all(&self.chunk).and_then(|()| match &self.syncer {
            Some(syncer) => {
                syncer.request();
                Ok(())
            }
            None => sink.sync(),
        });
        self.chunk.truncate(CHUNK_HEAD_LEN);
        written.map_err(|e| self.fail(e))
    }
}

/// Room for a chunk's head and a sealed chunk's worth of records, the head zeroed.
fn new_chunk_buffer() -> Vec<u8> {
    let mut chunk = Vec::with_capacity(CHUNK_HEAD_LEN + SEAL_BYTES + 64 * 1024);
    chunk.resize(CHUNK_HEAD_LEN, 0);
    chunk
}
