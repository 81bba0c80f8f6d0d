use std::fs::File;
use std::io::{self, Read};
use std::iter::FusedIterator;
use std::path::Path;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, Tag};
use bytes::Bytes;
use uuid::Uuid;

use super::{
    AUTHENTICATED_HEADER_LEN, CHUNK_HEAD_LEN, HEADER_LEN, HEADER_NONCE_CHUNK, KIND_DATA, KIND_FINAL, MAGIC,
    MAX_CHUNK_LEN, Record, SegmentError, SegmentHeader, StoredFrame, TAG_LEN, TRAILER_LEN, chunk_aad,
    chunk_nonce, decode_record,
};
use crate::keys::DataKey;
use crate::sfu::ParticipantId;

/// Reads one segment's frames in order, each with its sender. Each chunk is authenticated whole before any of its
/// frames is yielded, so a frame is never taken from a damaged chunk. After the first error the
/// iterator ends; a segment cut off by a crash yields every sealed frame and then
/// [`SegmentError::Truncated`].
pub struct SegmentReader<R: Read> {
    src: R,
    cipher: Aes256Gcm,
    header: SegmentHeader,
    authenticated_header: [u8; AUTHENTICATED_HEADER_LEN],
    next_chunk: u64,
    frames: u64,
    /// The participant behind each sender number, as the segment named them.
    senders: Vec<ParticipantId>,
    /// Frame records of the last chunk read that are not yet yielded.
    pending: Bytes,
    /// The frame count from the final chunk, once it is read.
    final_count: Option<u64>,
    done: bool,
}

impl SegmentReader<File> {
    pub fn open(path: &Path, key: &DataKey, recording: Uuid, segment: u32) -> Result<Self, SegmentError> {
        Self::new(File::open(path)?, key, recording, segment)
    }
}

impl<R: Read> SegmentReader<R> {
    /// Reads and checks the header: the segment must be `recording`'s number `segment`, under `key`.
    pub fn new(mut src: R, key: &DataKey, recording: Uuid, segment: u32) -> Result<Self, SegmentError> {
        let mut raw = [0u8; HEADER_LEN];
        let got = read_full(&mut src, &mut raw)?;
        let magic_got = got.min(MAGIC.len());
        if raw[..magic_got] != MAGIC[..magic_got] {
            return Err(SegmentError::NotASegment);
        }
        if got < HEADER_LEN {
            // The writer died while writing the header: a segment with nothing in it.
            return Err(SegmentError::Truncated { intact_chunks: 0 });
        }
        let found = Uuid::from_bytes(raw[8..24].try_into().expect("16 bytes"));
        if found != recording {
            return Err(SegmentError::WrongRecording {
                expected: recording,
                found,
            });
        }
        let found = u32::from_be_bytes(raw[24..28].try_into().expect("4 bytes"));
        if found != segment {
            return Err(SegmentError::WrongSegment {
                expected: segment,
                found,
            });
        }
        let authenticated_header: [u8; AUTHENTICATED_HEADER_LEN] =
            raw[..AUTHENTICATED_HEADER_LEN].try_into().expect("header length");
        let tag = Tag::<Aes256Gcm>::try_from(&raw[AUTHENTICATED_HEADER_LEN..]).expect("16 bytes");
        let cipher = key.cipher();
        cipher
            .decrypt_inout_detached(
                &chunk_nonce(segment, HEADER_NONCE_CHUNK),
                &authenticated_header,
                (&mut [][..]).into(),
                &tag,
            )
            .map_err(|_| SegmentError::WrongKey)?;
        Ok(Self {
            src,
            cipher,
            header: SegmentHeader {
                recording,
                segment,
                created_at_ms: u64::from_be_bytes(raw[28..36].try_into().expect("8 bytes")),
            },
            authenticated_header,
            next_chunk: 0,
            frames: 0,
            senders: Vec::new(),
            pending: Bytes::new(),
            final_count: None,
            done: false,
        })
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    fn next_frame(&mut self) -> Result<Option<StoredFrame>, SegmentError> {
        loop {
            if !self.pending.is_empty() {
                let corrupt = |reason| SegmentError::Corrupt {
                    chunk: self.next_chunk - 1,
                    reason,
                };
                match decode_record(&mut self.pending).map_err(corrupt)? {
                    Record::Sender { number, id } => {
                        if usize::from(number) != self.senders.len() {
                            return Err(corrupt("sender numbered out of turn"));
                        }
                        if self.senders.contains(&id) {
                            return Err(corrupt("sender named twice"));
                        }
                        self.senders.push(id);
                        continue;
                    }
                    Record::Frame { sender, frame } => {
                        let Some(&sender) = self.senders.get(usize::from(sender)) else {
                            return Err(corrupt("frame of a sender not yet named"));
                        };
                        self.frames += 1;
                        return Ok(Some(StoredFrame { sender, frame }));
                    }
                }
            }
            if let Some(count) = self.final_count {
                if count != self.frames {
                    return Err(SegmentError::Corrupt {
                        chunk: self.next_chunk - 1,
                        reason: "frame count does not match the frames",
                    });
                }
                if read_full(&mut self.src, &mut [0u8; 1])? != 0 {
                    return Err(SegmentError::TrailingData);
                }
                return Ok(None);
            }
            self.read_chunk()?;
        }
    }

    /// Reads, authenticates and decrypts the next chunk into `pending`.
    fn read_chunk(&mut self) -> Result<(), SegmentError> {
        let chunk = self.next_chunk;
        let truncated = SegmentError::Truncated { intact_chunks: chunk };
        let mut head = [0u8; CHUNK_HEAD_LEN];
        if read_full(&mut self.src, &mut head)? < CHUNK_HEAD_LEN {
            return Err(truncated);
        }
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_CHUNK_LEN {
            return Err(SegmentError::TooLarge {
                chunk,
                len: len as u64,
            });
        }
        let found = u64::from_be_bytes(head[5..].try_into().expect("8 bytes"));
        if found != chunk {
            return Err(SegmentError::OutOfOrder {
                expected: chunk,
                found,
            });
        }
        if len < TAG_LEN {
            return Err(SegmentError::Tampered { chunk });
        }
        let mut body = vec![0u8; len];
        if read_full(&mut self.src, &mut body)? < len {
            return Err(truncated);
        }
        let (ciphertext, tag) = body.split_at_mut(len - TAG_LEN);
        let tag = Tag::<Aes256Gcm>::try_from(&*tag).expect("16 bytes");
        self.cipher
            .decrypt_inout_detached(
                &chunk_nonce(self.header.segment, chunk),
                &chunk_aad(&self.authenticated_header, &head),
                ciphertext.into(),
                &tag,
            )
            .map_err(|_| SegmentError::Tampered { chunk })?;
        body.truncate(len - TAG_LEN);
        self.next_chunk += 1;
        match head[4] {
            KIND_DATA => {}
            KIND_FINAL => {
                let Some(records_len) = body.len().checked_sub(TRAILER_LEN) else {
                    return Err(SegmentError::Corrupt {
                        chunk,
                        reason: "final chunk lacks the frame count",
                    });
                };
                let count = u64::from_be_bytes(body[records_len..].try_into().expect("8 bytes"));
                body.truncate(records_len);
                self.final_count = Some(count);
            }
            _ => {
                return Err(SegmentError::Corrupt {
                    chunk,
                    reason: "unknown chunk kind",
                });
            }
        }
        self.pending = Bytes::from(body);
        Ok(())
    }
}

impl<R: Read> Iterator for SegmentReader<R> {
    type Item = Result<StoredFrame, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_frame() {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<R: Read> FusedIterator for SegmentReader<R> {}

/// Fills as much of `buf` as the source holds; fewer bytes than asked means end of file.
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
