use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::AeadInOut;

use super::{
    AUTHENTICATED_HEADER_LEN, CHUNK_HEAD_LEN, Frame, HEADER_NONCE_CHUNK, KIND_DATA, KIND_FINAL,
    MAX_FRAME_LEN, RECORD_HEAD_LEN, SEAL_BYTES, SEAL_INTERVAL_MS, SegmentHeader, TAG_LEN, WriteError,
    chunk_aad, chunk_nonce, encode_chunk_head, encode_frame,
};
use crate::keys::DataKey;

/// Where a segment goes: written append-only, and made durable after each sealed chunk.
pub trait Sink: Write {
    /// Makes everything written so far survive a power loss.
    fn sync(&mut self) -> io::Result<()>;
}

impl Sink for File {
    fn sync(&mut self) -> io::Result<()> {
        // The file's length changes with every chunk, and `sync_data` covers that metadata too.
        self.sync_data()
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
pub struct SegmentWriter<S: Sink> {
    sink: S,
    cipher: Aes256Gcm,
    header: [u8; AUTHENTICATED_HEADER_LEN],
    segment: u32,
    /// The next chunk: room for its head, then the frame records buffered so far.
    chunk: Vec<u8>,
    next_chunk: u64,
    frames: u64,
    last_seal_ms: u64,
    /// Set while a chunk is being written: if the write fails, a partial chunk may be on disk
    /// and rewriting that chunk index would reuse its nonce, so the writer stops for good.
    failed: bool,
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
        let mut chunk = Vec::with_capacity(CHUNK_HEAD_LEN + SEAL_BYTES + 64 * 1024);
        chunk.resize(CHUNK_HEAD_LEN, 0);
        Ok(Self {
            sink,
            cipher,
            header: authenticated,
            segment: header.segment,
            chunk,
            next_chunk: 0,
            frames: 0,
            last_seal_ms: header.created_at_ms,
            failed: false,
        })
    }

    /// Buffers a frame, sealing a chunk once [`SEAL_BYTES`] are buffered.
    pub fn push(&mut self, frame: &Frame) -> Result<(), WriteError> {
        self.check_usable()?;
        if frame.payload.len() > MAX_FRAME_LEN {
            return Err(WriteError::FrameTooLarge {
                len: frame.payload.len(),
            });
        }
        self.chunk.reserve(RECORD_HEAD_LEN + frame.payload.len());
        encode_frame(&mut self.chunk, frame);
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

    /// Seals the remaining frames in the final chunk, which marks the segment complete, and
    /// hands back the sink.
    pub fn finish(mut self) -> Result<S, WriteError> {
        self.check_usable()?;
        let frames = self.frames;
        self.chunk.extend_from_slice(&frames.to_be_bytes());
        self.seal(KIND_FINAL)?;
        Ok(self.sink)
    }

    fn check_usable(&self) -> Result<(), WriteError> {
        if self.failed {
            Err(WriteError::Failed)
        } else {
            Ok(())
        }
    }

    /// Encrypts the buffered chunk in place, appends it to the sink in one write and syncs.
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

        self.failed = true;
        self.sink.write_all(&self.chunk)?;
        self.sink.sync()?;
        self.failed = false;

        self.next_chunk += 1;
        self.chunk.truncate(CHUNK_HEAD_LEN);
        Ok(())
    }
}
