//! Recordings after the call: the remux into WebM playback copies, kept encrypted in object storage in a
//! layout that serves HTTP ranges without decrypting the whole file, playback tickets, and the
//! retention sweep that crypto-erases expired recordings.
//!
//! # Copies
//!
//! A recording has its own copy, with every participant's tracks (for export and desktop players), and
//! one copy per participant with their audio and video only: a browser plays only the first audio track
//! of a file, so the playback page plays the participants' copies side by side. Each copy is named after
//! what it holds (`recordings/<recording>/<recording>.webm.enc` for the recording's own,
//! `…/<participant>.webm.enc` for a participant's), so a remux run again after a crash overwrites what
//! an earlier run left rather than adding to it.
//!
//! # Memory
//!
//! A remux writes the WebM into a scratch file in the data directory, encrypted under a key that lives
//! only in memory, so the plaintext never touches the disk and a file a crash leaves behind is noise.
//! The file is then sealed block by block and uploaded in parts, a few parts in flight at a time:
//! memory stays bounded whatever the length of the call (`tests/remux_memory.rs` measures it).
//!
//! # Playback copy (version 1)
//!
//! The WebM's plaintext is cut into blocks of [`BLOCK`] bytes (the last may be shorter). Block `i` is
//! stored at offset `i × STRIDE` as `nonce (12) ‖ AES-256-GCM ciphertext ‖ tag (16)`, under the
//! recording's playback key, with associated data `label ‖ recording id ‖ copy id ‖ i ‖ total length`.
//! A block moved, swapped in from another copy or recording, altered or cut off fails to open, and the
//! total length (from the database) is bound into every block, so a shortened copy is caught too. The
//! nonces are random: a playback key is made once per recording and a copy made again (after a crash,
//! say) uses it again.
//!
//! The playback key is sealed under the recording's data key, in the segment log's format at a segment
//! index no call reaches ([`KEY_BOX_SEGMENT`]), and stored beside the wrapped data key. Deleting the
//! wrapped data key therefore makes the playback copy unreadable as well: retention deletes the keys
//! first, then the objects and segment files.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{AeadInOut, Nonce, Tag};
use aes_gcm::aes::Aes256;
use aes_gcm::aes::cipher::BlockCipherEncrypt;
use aes_gcm::{Aes256Gcm, KeyInit};
use bytes::Bytes;
use confide_domain::RecordingId;
use confide_domain::UserId;
use confide_domain::policy::Grant;
use confide_domain::policy::actions::PlayRecording;
use confide_media::remux::{RemuxOptions, RemuxSummary, remux_segments_with};
use confide_media::sfu::ParticipantId;
use confide_media::sfu::recorder::segment_path;
use confide_media::{
    DataKey, Frame, KeyError, MasterKey, SegmentError, SegmentHeader, SegmentReader, SegmentWriter, Track,
    WrappedKey,
};
use confide_store::{RecordingCopy, RecordingJob, Store, StoreError};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use rand::RngCore;
use uuid::Uuid;

use crate::config::BlobStoreConfig;

/// Plaintext bytes per block of a playback copy.
pub const BLOCK: u64 = 64 * 1024;
const NONCE_LEN: u64 = 12;
const TAG_LEN: u64 = 16;
/// Stored bytes per full block.
pub const STRIDE: u64 = NONCE_LEN + BLOCK + TAG_LEN;
/// The segment index at which a recording's playback key is sealed: the store numbers a call's segments
/// from 0 upwards, one at a time, and never gets near it.
const KEY_BOX_SEGMENT: u32 = u32::MAX;
const AAD_LABEL: &[u8] = b"confide-playback-v1";
/// Blocks fetched and decrypted at a time while streaming.
const BATCH_BLOCKS: u64 = 16;
/// How long a break-glass grant stays open.
pub const BREAK_GLASS_MS: i64 = 60 * 60_000;
/// How long a playback ticket lasts at most.
const TICKET_MS: i64 = 4 * 60 * 60_000;
/// Attempts before a remux is given up and left for the operator.
const MAX_ATTEMPTS: i64 = 6;
const LEASE_MS: i64 = 10 * 60_000;
/// The remuxes' scratch directory, beside the recordings' segment directories.
const SCRATCH_DIR: &str = ".remux";
/// Bytes per part of an upload: the smallest part S3 takes but for the last.
const PART: usize = 5 * 1024 * 1024;
/// Parts of an upload in flight at once: with the one being filled, what an upload holds in memory.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("object storage: {0}")]
    Objects(#[from] object_store::Error),
    #[error("the recording's key: {0}")]
    Key(#[from] KeyError),
    #[error("the recording's stored key is not valid")]
    KeyEncoding,
    #[error("segment {segment}: {source}")]
    Segment {
        segment: u32,
        #[source]
        source: SegmentError,
    },
    #[error("the playback key does not open: {0}")]
    KeyBox(String),
    #[error("remux: {0}")]
    Remux(String),
    #[error("block {block} of the playback copy does not open: altered, truncated or misplaced")]
    Tampered { block: u64 },
    #[error("the playback copy is shorter than its recorded length")]
    Short,
    #[error("the recording has no playback copy")]
    NoCopy,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Object storage for playback copies: the local disk by default, S3 in production.
pub fn object_store(config: &BlobStoreConfig, data_dir: &Path) -> Result<Arc<dyn ObjectStore>, String> {
    match config {
        BlobStoreConfig::Local { dir } => {
            let dir = dir.clone().unwrap_or_else(|| data_dir.join("blobs"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let store =
                object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| e.to_string())?;
            Ok(Arc::new(store))
        }
        BlobStoreConfig::S3(s3) => {
            let mut builder = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(&s3.bucket)
                .with_region(&s3.region);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                builder = builder.with_access_key_id(id).with_secret_access_key(secret);
            }
            Ok(Arc::new(builder.build().map_err(|e| e.to_string())?))
        }
    }
}

/// A recording's playback key: it encrypts the blocks of the recording's playback copies.
pub struct PlaybackKey(Aes256Gcm);

impl PlaybackKey {
    /// A new key, with its raw bytes for sealing.
    pub fn generate() -> ([u8; 32], PlaybackKey) {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let key = PlaybackKey(Aes256Gcm::new((&raw).into()));
        (raw, key)
    }

    /// Seals `raw` under the recording's data key.
    fn seal(raw: &[u8; 32], data: &DataKey, recording: RecordingId) -> Result<Vec<u8>, RecordingError> {
        let header = SegmentHeader {
            recording: recording.as_uuid(),
            segment: KEY_BOX_SEGMENT,
            created_at_ms: 0,
        };
        let box_err = |e: confide_media::WriteError| RecordingError::KeyBox(e.to_string());
        let mut writer = SegmentWriter::new(Vec::new(), data, header).map_err(box_err)?;
        writer
            .push(
                ParticipantId(recording.as_uuid()),
                &Frame {
                    track: Track::Audio,
                    timestamp_us: 0,
                    keyframe: false,
                    payload: Bytes::copy_from_slice(raw),
                },
            )
            .map_err(box_err)?;
        writer.finish().map_err(box_err)
    }

    fn open(sealed: &[u8], data: &DataKey, recording: RecordingId) -> Result<PlaybackKey, RecordingError> {
        let mut reader = SegmentReader::new(sealed, data, recording.as_uuid(), KEY_BOX_SEGMENT)
            .map_err(|e| RecordingError::KeyBox(e.to_string()))?;
        let frame = reader
            .next()
            .ok_or_else(|| RecordingError::KeyBox("empty".into()))?
            .map_err(|e| RecordingError::KeyBox(e.to_string()))?;
        let raw: [u8; 32] = frame.payload[..]
            .try_into()
            .map_err(|_| RecordingError::KeyBox("not a key".into()))?;
        Ok(PlaybackKey(Aes256Gcm::new((&raw).into())))
    }
}

/// Where a playback copy's blocks are bound: which recording, which copy of it, how long it is.
#[derive(Clone, Copy, Debug)]
struct CopyId {
    recording: Uuid,
    copy: Uuid,
    len: u64,
}

impl CopyId {
    fn aad(&self, block: u64) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_LABEL.len() + 48);
        aad.extend_from_slice(AAD_LABEL);
        aad.extend_from_slice(self.recording.as_bytes());
        aad.extend_from_slice(self.copy.as_bytes());
        aad.extend_from_slice(&block.to_be_bytes());
        aad.extend_from_slice(&self.len.to_be_bytes());
        aad
    }

    fn blocks(&self) -> u64 {
        self.len.div_ceil(BLOCK)
    }

    /// Where block `i`'s bytes are in the object.
    fn stored_range(&self, first: u64, last: u64) -> Range<u64> {
        let end = (last + 1).min(self.blocks());
        let plain_end = (end * BLOCK).min(self.len);
        let stored_end = first * STRIDE + (plain_end - first * BLOCK) + (end - first) * (NONCE_LEN + TAG_LEN);
        first * STRIDE..stored_end
    }
}

fn seal_block(key: &PlaybackKey, id: &CopyId, block: u64, plain: &[u8], out: &mut Vec<u8>) {
    let mut nonce = [0u8; NONCE_LEN as usize];
    rand::rng().fill_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plain);
    let tag = key
        .0
        .encrypt_inout_detached(
            &Nonce::<Aes256Gcm>::from(nonce),
            &id.aad(block),
            (&mut out[start..]).into(),
        )
        .expect("a 64 KiB block is within AES-GCM's limits");
    out.extend_from_slice(&tag);
}

fn open_block(key: &PlaybackKey, id: &CopyId, block: u64, stored: &[u8]) -> Result<Vec<u8>, RecordingError> {
    let tampered = RecordingError::Tampered { block };
    if stored.len() < (NONCE_LEN + TAG_LEN) as usize {
        return Err(tampered);
    }
    let (nonce, rest) = stored.split_at(NONCE_LEN as usize);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN as usize);
    let expected = (id.len - block * BLOCK).min(BLOCK) as usize;
    if body.len() != expected {
        return Err(tampered);
    }
    let mut plain = body.to_vec();
    key.0
        .decrypt_inout_detached(
            &Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| RecordingError::Tampered { block })?,
            &id.aad(block),
            (&mut plain[..]).into(),
            &Tag::<Aes256Gcm>::try_from(tag).map_err(|_| RecordingError::Tampered { block })?,
        )
        .map_err(|_| tampered)?;
    Ok(plain)
}

/// A playback ticket: the gate's grant to play one recording, issued (and audited) once per play
/// session, so that the media's many range requests are not each a new access.
struct Ticket {
    grant: Arc<Grant<PlayRecording>>,
    expires_ms: i64,
}

/// A playback copy opened for reading.
pub struct OpenCopy {
    objects: Arc<dyn ObjectStore>,
    path: ObjectPath,
    id: CopyId,
    key: Arc<PlaybackKey>,
}

impl OpenCopy {
    pub fn len(&self) -> u64 {
        self.id.len
    }

    pub fn is_empty(&self) -> bool {
        self.id.len == 0
    }

    /// The plaintext bytes `range` (end exclusive), decrypting only the blocks it touches.
    pub async fn read(&self, range: Range<u64>) -> Result<Vec<u8>, RecordingError> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let (first, last) = (range.start / BLOCK, (range.end - 1) / BLOCK);
        let stored_range = self.id.stored_range(first, last);
        let want = stored_range.end - stored_range.start;
        let stored = self.objects.get_range(&self.path, stored_range).await?;
        if (stored.len() as u64) < want {
            return Err(RecordingError::Short);
        }
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut at = 0usize;
        for block in first..=last {
            let plain_len = (self.id.len - block * BLOCK).min(BLOCK) as usize;
            let stored_len = plain_len + (NONCE_LEN + TAG_LEN) as usize;
            let plain = open_block(&self.key, &self.id, block, &stored[at..at + stored_len])?;
            at += stored_len;
            let block_start = block * BLOCK;
            let from = range.start.saturating_sub(block_start) as usize;
            let to = ((range.end - block_start) as usize).min(plain.len());
            out.extend_from_slice(&plain[from..to]);
        }
        Ok(out)
    }

    /// The range as a stream of decrypted batches, for a response body.
    pub fn stream(
        self: Arc<Self>,
        range: Range<u64>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, RecordingError>> + Send + 'static {
        futures_util::stream::try_unfold(range.start, move |at| {
            let copy = self.clone();
            let end = range.end;
            async move {
                if at >= end {
                    return Ok(None);
                }
                let batch_end = ((at / BLOCK + BATCH_BLOCKS) * BLOCK).min(end);
                let bytes = copy.read(at..batch_end).await?;
                Ok(Some((Bytes::from(bytes), batch_end)))
            }
        })
    }
}

/// The recordings service: object storage, the master key for unwrapping data keys, and tickets.
#[derive(Clone)]
pub struct Recordings {
    inner: Arc<Inner>,
}

struct Inner {
    objects: Arc<dyn ObjectStore>,
    master: MasterKey,
    segments_dir: PathBuf,
    tickets: Mutex<HashMap<String, Ticket>>,
}

impl Recordings {
    pub fn new(objects: Arc<dyn ObjectStore>, master: MasterKey, segments_dir: PathBuf) -> Self {
        Recordings {
            inner: Arc::new(Inner {
                objects,
                master,
                segments_dir,
                tickets: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.objects
    }

    fn data_key(&self, recording: RecordingId, wrapped_hex: &str) -> Result<DataKey, RecordingError> {
        let bytes = hex::decode(wrapped_hex).map_err(|_| RecordingError::KeyEncoding)?;
        Ok(WrappedKey::from_bytes(&bytes)?.unwrap(&self.inner.master, recording.as_uuid())?)
    }

    /// Opens a recording's playback copy with its stored keys.
    pub fn open_copy(
        &self,
        recording: RecordingId,
        wrapped_key: &str,
        sealed_playback_key: &str,
        object: &str,
        len: u64,
    ) -> Result<OpenCopy, RecordingError> {
        let data = self.data_key(recording, wrapped_key)?;
        let sealed = hex::decode(sealed_playback_key).map_err(|_| RecordingError::KeyEncoding)?;
        let key = PlaybackKey::open(&sealed, &data, recording)?;
        let copy = object
            .rsplit('/')
            .next()
            .and_then(|name| name.strip_suffix(".webm.enc"))
            .and_then(|id| id.parse().ok())
            .ok_or(RecordingError::NoCopy)?;
        Ok(OpenCopy {
            objects: self.inner.objects.clone(),
            path: ObjectPath::from(object),
            id: CopyId {
                recording: recording.as_uuid(),
                copy,
                len,
            },
            key: Arc::new(key),
        })
    }

    /// Issues a ticket for `grant`, lasting until `until_ms` at most; returns its token and expiry.
    pub fn issue_ticket(
        &self,
        grant: Grant<PlayRecording>,
        now_ms: i64,
        until_ms: Option<i64>,
    ) -> (String, i64) {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let expires_ms = until_ms.map_or(now_ms + TICKET_MS, |u| u.min(now_ms + TICKET_MS));
        let mut tickets = self.inner.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets.retain(|_, t| t.expires_ms > now_ms);
        tickets.insert(
            token.clone(),
            Ticket {
                grant: Arc::new(grant),
                expires_ms,
            },
        );
        (token, expires_ms)
    }

    /// The grant a ticket carries, if it is current and was issued to `user` for `recording`.
    pub fn ticket(
        &self,
        token: &str,
        user: UserId,
        recording: RecordingId,
        now_ms: i64,
    ) -> Option<Arc<Grant<PlayRecording>>> {
        let tickets = self.inner.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets
            .get(token)
            .filter(|t| {
                t.expires_ms > now_ms
                    && t.grant.principal().user == user
                    && t.grant.recording().id == recording
            })
            .map(|t| t.grant.clone())
    }

    /// Makes the playback copies of a job's recording and records them. A recording that expired meanwhile
    /// is left alone. On an error, the copies this run made are removed again.
    pub async fn remux(&self, store: &Store, job: &RecordingJob, now_ms: i64) -> Result<(), RecordingError> {
        let Some(facts) = store.remux_facts(job).await? else {
            return Ok(());
        };
        if facts.expired {
            return Ok(());
        }
        let recording = job.recording;
        let Some(wrapped) = facts.wrapped_key else {
            // Nobody ever joined the call, so it recorded nothing: there is nothing to play.
            return Err(RecordingError::NoCopy);
        };
        let data = Arc::new(self.data_key(recording, &wrapped)?);
        let key = match facts.playback_key {
            Some(sealed) => {
                let sealed = hex::decode(sealed).map_err(|_| RecordingError::KeyEncoding)?;
                PlaybackKey::open(&sealed, &data, recording)?
            }
            None => {
                let (raw, _) = PlaybackKey::generate();
                let sealed = hex::encode(PlaybackKey::seal(&raw, &data, recording)?);
                let kept = store.set_playback_key_if_absent(job, &sealed).await?;
                let kept = hex::decode(kept).map_err(|_| RecordingError::KeyEncoding)?;
                PlaybackKey::open(&kept, &data, recording)?
            }
        };
        let segments: Vec<u32> = facts.segments.iter().map(|s| s.index).collect();
        let mut made = Vec::new();
        let result = self
            .make_copies(store, job, &data, &key, &segments, &mut made, now_ms)
            .await;
        if !matches!(result, Ok(true)) {
            // Failed, or the recording expired meanwhile: nothing of this run stays behind.
            for object in &made {
                match self.inner.objects.delete(object).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => tracing::warn!(%object, error = %e, "a copy of a failed remux was not removed"),
                }
            }
        }
        result.map(|_| ())
    }

    /// Makes the recording's own copy, then one per participant in it, and records them all; false if the
    /// recording expired meanwhile. Every object made is pushed onto `made` as soon as it exists.
    #[allow(clippy::too_many_arguments)]
    async fn make_copies(
        &self,
        store: &Store,
        job: &RecordingJob,
        data: &Arc<DataKey>,
        key: &PlaybackKey,
        segments: &[u32],
        made: &mut Vec<ObjectPath>,
        now_ms: i64,
    ) -> Result<bool, RecordingError> {
        let recording = job.recording;
        let all = self.make_copy(recording, data, key, segments, None).await?;
        made.push(all.path.clone());
        let mut participants: Vec<ParticipantId> =
            all.summary.tracks.iter().map(|t| t.key.participant).collect();
        participants.sort_by_key(|p| p.0);
        participants.dedup();
        let mut copies = Vec::with_capacity(participants.len());
        for participant in participants {
            let one = self
                .make_copy(recording, data, key, segments, Some(participant))
                .await?;
            made.push(one.path.clone());
            copies.push(RecordingCopy {
                participant: participant.0,
                object: one.path.to_string(),
                len: stored_len(one.len)?,
                duration_ms: stored_len(one.summary.duration_ms)?,
                offset_ms: stored_len(one.summary.start_us.saturating_sub(all.summary.start_us) / 1000)?,
            });
        }
        let duration = stored_len(all.summary.duration_ms)?;
        Ok(store
            .finish_remux(
                job,
                all.path.as_ref(),
                stored_len(all.len)?,
                duration,
                &copies,
                now_ms,
            )
            .await?)
    }

    /// Remuxes the recording's segments, every participant's tracks or `only` one's, into a scratch
    /// file, then seals it block by block into the object named after the copy, uploaded in parts. The
    /// object appears whole or not at all.
    pub async fn make_copy(
        &self,
        recording: RecordingId,
        data: &Arc<DataKey>,
        key: &PlaybackKey,
        segments: &[u32],
        only: Option<ParticipantId>,
    ) -> Result<MadeCopy, RecordingError> {
        let (copy, options) = match only {
            Some(participant) => (participant.0, RemuxOptions::participant(participant)),
            None => (recording.as_uuid(), RemuxOptions::default()),
        };
        let dir = self.inner.segments_dir.clone();
        let scratch_dir = dir.join(SCRATCH_DIR);
        let (data, segment_list) = (data.clone(), segments.to_vec());
        let (scratch, summary) = tokio::task::spawn_blocking(move || {
            let mut scratch = Scratch::create(&scratch_dir)?;
            let summary = remux_into(&dir, recording, &data, &segment_list, options, &mut scratch)?;
            Ok::<_, RecordingError>((scratch, summary))
        })
        .await
        .map_err(|e| RecordingError::Remux(e.to_string()))??;
        let len = scratch.len;
        let id = CopyId {
            recording: recording.as_uuid(),
            copy,
            len,
        };
        let path = ObjectPath::from(format!("recordings/{recording}/{copy}.webm.enc"));
        let upload = self.inner.objects.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        match seal_into(&scratch, key, &id, &mut writer).await {
            Ok(()) => {
                writer.finish().await?;
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(%path, error = %abort, "an upload that failed was not aborted");
                }
                return Err(e);
            }
        }
        Ok(MadeCopy { path, len, summary })
    }
    /// Runs every remux that is due; returns how many finished.
    pub async fn run_due(&self, store: &Store, now_ms: i64) -> Result<usize, StoreError> {
        let mut finished = 0;
        for job in store.due_recording_jobs(now_ms, 20).await? {
            if !store.claim_recording_job(&job, now_ms, LEASE_MS).await? {
                continue;
            }
            match self.remux(store, &job, now_ms).await {
                Ok(()) => finished += 1,
                Err(e) => {
                    let attempts = job.attempts + 1;
                    tracing::warn!(recording = %job.recording, attempts, error = %e, "remux failed");
                    let retry = (attempts < MAX_ATTEMPTS && !matches!(e, RecordingError::NoCopy))
                        .then(|| now_ms + 30_000 * (1 << attempts.min(6)));
                    store
                        .fail_recording_job(&job, &e.to_string(), retry, now_ms)
                        .await?;
                }
            }
        }
        Ok(finished)
    }

    /// Erases every recording past its practice's retention: keys first (in the database, in one
    /// transaction per practice), then the playback copies and segment files. Returns how many
    /// recordings' files were removed.
    pub async fn expire_due(&self, store: &Store, now_ms: i64) -> Result<usize, RecordingError> {
        let mut erased = 0;
        for (practice, days) in store.practices_with_retention().await? {
            let cutoff = now_ms.saturating_sub(days.saturating_mul(86_400_000));
            let expired = store.expire_recordings(practice, cutoff, now_ms).await?;
            if expired > 0 {
                tracing::info!(%practice, expired, "recordings past retention crypto-erased");
            }
            for gone in store.erasable_recordings(practice).await? {
                for object in &gone.objects {
                    match self
                        .inner
                        .objects
                        .delete(&ObjectPath::from(object.as_str()))
                        .await
                    {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let uuid = gone.recording.as_uuid();
                for index in &gone.segments {
                    match std::fs::remove_file(segment_path(&self.inner.segments_dir, uuid, *index)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                match std::fs::remove_dir(self.inner.segments_dir.join(uuid.to_string())) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                store.mark_erased(practice, gone.recording, now_ms).await?;
                erased += 1;
            }
        }
        Ok(erased)
    }
}

/// Makes playback copies and applies retention until `stop` turns true, waking when a call ends or
/// every poll interval.
pub(crate) async fn run(state: crate::AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    // What a crash left in the scratch directory can no longer be read: its keys died with the process.
    match std::fs::remove_dir_all(state.recordings.inner.segments_dir.join(SCRATCH_DIR)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "the remux scratch directory was not cleared"),
    }
    loop {
        if let Err(e) = state.run_recording_jobs().await {
            tracing::warn!(error = %e, "recording pass failed; retrying at the next poll");
        }
        tokio::select! {
            _ = state.calls.ended().notified() => {}
            _ = tokio::time::sleep(state.config.job_poll) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// A playback copy made and uploaded.
pub struct MadeCopy {
    pub path: ObjectPath,
    /// Plaintext length.
    pub len: u64,
    pub summary: RemuxSummary,
}

fn stored_len(n: u64) -> Result<i64, RecordingError> {
    i64::try_from(n).map_err(|_| RecordingError::Remux("the copy is too long".into()))
}

/// Seals the scratch file block by block into `writer`, waiting for parts in flight to go out.
async fn seal_into(
    scratch: &Scratch,
    key: &PlaybackKey,
    id: &CopyId,
    writer: &mut WriteMultipart,
) -> Result<(), RecordingError> {
    let mut plain = vec![0u8; BLOCK as usize];
    let mut sealed = Vec::with_capacity(STRIDE as usize);
    for block in 0..id.blocks() {
        let start = block * BLOCK;
        let n = (id.len - start).min(BLOCK) as usize;
        scratch.read_at(start, &mut plain[..n])?;
        sealed.clear();
        seal_block(key, id, block, &plain[..n], &mut sealed);
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        writer.write(&sealed);
    }
    Ok(())
}

/// Remuxes the tracks `options` picks from the recording's segments into `out`; returns what it wrote.
/// A segment cut short by a crash ends where its intact chunks end; any other damage fails the remux
/// rather than play garbage, and a segment that was numbered but never written is skipped.
fn remux_into<W: Write + Seek>(
    dir: &Path,
    recording: RecordingId,
    key: &DataKey,
    segments: &[u32],
    options: RemuxOptions,
    out: W,
) -> Result<RemuxSummary, RecordingError> {
    let mut readers = Vec::new();
    for &index in segments {
        let path = segment_path(dir, recording.as_uuid(), index);
        match SegmentReader::open(&path, key, recording.as_uuid(), index) {
            Ok(reader) => readers.push((index, reader)),
            Err(SegmentError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(SegmentError::Truncated { .. }) => {}
            Err(source) => {
                return Err(RecordingError::Segment {
                    segment: index,
                    source,
                });
            }
        }
    }
    let segments = readers.into_iter().map(|(index, reader)| {
        Ok::<_, RecordingError>(
            reader
                .take_while(|frame| !matches!(frame, Err(SegmentError::Truncated { .. })))
                .map(move |frame| {
                    frame.map_err(|source| RecordingError::Segment {
                        segment: index,
                        source,
                    })
                }),
        )
    });
    remux_segments_with(segments, out, options).map_err(|e| RecordingError::Remux(e.to_string()))
}

/// A remux's scratch file: written and read at any position, encrypted with AES-256-CTR under a key
/// made for it alone and kept in memory only, and removed when dropped, whatever happened.
struct Scratch {
    file: std::fs::File,
    path: PathBuf,
    cipher: Aes256,
    /// Where the next write goes.
    at: u64,
    len: u64,
}

/// Bytes of keystream made at a time.
const KEYSTREAM_CHUNK: usize = 64 * 1024;

impl Scratch {
    fn create(dir: &Path) -> Result<Scratch, RecordingError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.tmp", Uuid::new_v4()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        Ok(Scratch {
            file,
            path,
            cipher: Aes256::new((&raw).into()),
            at: 0,
            len: 0,
        })
    }

    /// XORs `data`, which sits at `at` in the file, with the keystream there.
    fn apply(&self, at: u64, data: &mut [u8]) {
        let mut keystream: Vec<aes_gcm::aes::Block> = Vec::new();
        let mut done = 0usize;
        while done < data.len() {
            let pos = at + done as u64;
            let skip = (pos % 16) as usize;
            let n = (data.len() - done).min(KEYSTREAM_CHUNK - skip);
            let first = u128::from(pos / 16);
            let blocks = (skip + n).div_ceil(16);
            keystream.clear();
            keystream
                .extend((0..blocks as u128).map(|i| aes_gcm::aes::Block::from((first + i).to_be_bytes())));
            self.cipher.encrypt_blocks(&mut keystream);
            for (i, byte) in data[done..done + n].iter_mut().enumerate() {
                let k = skip + i;
                *byte ^= keystream[k / 16][k % 16];
            }
            done += n;
        }
    }

    /// Reads exactly `out.len()` plaintext bytes from `at`.
    fn read_at(&self, at: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(out, at)?;
        self.apply(at, out);
        Ok(())
    }
}

impl Write for Scratch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(KEYSTREAM_CHUNK);
        let mut sealed = buf[..n].to_vec();
        self.apply(self.at, &mut sealed);
        self.file.write_all_at(&sealed, self.at)?;
        self.at += n as u64;
        self.len = self.len.max(self.at);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Scratch {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let at = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.at.checked_add_signed(delta),
        };
        self.at =
            at.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "before the start"))?;
        Ok(self.at)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "a remux scratch file was not removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PlaybackKey {
        PlaybackKey::generate().1
    }

    fn sealed(key: &PlaybackKey, id: &CopyId, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, block) in plain.chunks(BLOCK as usize).enumerate() {
            seal_block(key, id, i as u64, block, &mut out);
        }
        out
    }

    fn open_all(key: &PlaybackKey, id: &CopyId, stored: &[u8]) -> Result<Vec<u8>, RecordingError> {
        let mut out = Vec::new();
        for block in 0..id.blocks() {
            let r = id.stored_range(block, block);
            let bytes = stored
                .get(r.start as usize..r.end as usize)
                .ok_or(RecordingError::Short)?;
            out.extend(open_block(key, id, block, bytes)?);
        }
        Ok(out)
    }

    #[test]
    fn blocks_round_trip_and_ranges_map_to_stored_bytes() {
        let key = key();
        let plain: Vec<u8> = (0..(3 * BLOCK + 100)).map(|i| (i % 251) as u8).collect();
        let id = CopyId {
            recording: Uuid::new_v4(),
            copy: Uuid::new_v4(),
            len: plain.len() as u64,
        };
        let stored = sealed(&key, &id, &plain);
        assert_eq!(stored.len() as u64, id.stored_range(0, 3).end);
        assert_eq!(open_all(&key, &id, &stored).unwrap(), plain);
        assert_eq!(id.stored_range(1, 2), STRIDE..3 * STRIDE);
    }

    #[test]
    fn altered_swapped_cut_or_foreign_blocks_fail() {
        let key = key();
        let plain = vec![7u8; (2 * BLOCK + 5) as usize];
        let id = CopyId {
            recording: Uuid::new_v4(),
            copy: Uuid::new_v4(),
            len: plain.len() as u64,
        };
        let stored = sealed(&key, &id, &plain);

        let mut altered = stored.clone();
        altered[STRIDE as usize + 40] ^= 1;
        assert!(matches!(
            open_all(&key, &id, &altered),
            Err(RecordingError::Tampered { block: 1 })
        ));

        let mut swapped = stored.clone();
        let (a, b) = swapped.split_at_mut(STRIDE as usize);
        a.swap_with_slice(&mut b[..STRIDE as usize]);
        assert!(matches!(
            open_all(&key, &id, &swapped),
            Err(RecordingError::Tampered { block: 0 })
        ));

        // Cut to two whole blocks and presented as such: the length in every block's data gives it away.
        let cut = CopyId { len: 2 * BLOCK, ..id };
        assert!(matches!(
            open_all(&key, &cut, &stored[..2 * STRIDE as usize]),
            Err(RecordingError::Tampered { block: 0 })
        ));
        assert!(matches!(
            open_all(&key, &id, &stored[..2 * STRIDE as usize]),
            Err(RecordingError::Short)
        ));

        let other_copy = CopyId {
            copy: Uuid::new_v4(),
            ..id
        };
        assert!(open_all(&key, &other_copy, &stored).is_err());
        assert!(open_all(&PlaybackKey::generate().1, &id, &stored).is_err());
    }

    #[test]
    fn the_playback_key_opens_only_with_its_recordings_data_key() {
        let mut rng = rand::rng();
        let data = DataKey::generate(&mut rng);
        let recording = RecordingId::from_uuid(Uuid::new_v4());
        let (raw, key) = PlaybackKey::generate();
        let sealed = PlaybackKey::seal(&raw, &data, recording).unwrap();
        let opened = PlaybackKey::open(&sealed, &data, recording).unwrap();
        let id = CopyId {
            recording: recording.as_uuid(),
            copy: Uuid::new_v4(),
            len: 10,
        };
        let stored = sealed_one(&key, &id);
        assert_eq!(open_block(&opened, &id, 0, &stored).unwrap(), b"0123456789");
        assert!(PlaybackKey::open(&sealed, &DataKey::generate(&mut rng), recording).is_err());
        assert!(PlaybackKey::open(&sealed, &data, RecordingId::from_uuid(Uuid::new_v4())).is_err());
    }

    fn sealed_one(key: &PlaybackKey, id: &CopyId) -> Vec<u8> {
        let mut out = Vec::new();
        seal_block(key, id, 0, b"0123456789", &mut out);
        out
    }
}
