//! A consultation's one recording and its segments.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Binding, ConsultationMode, RestoreError, StoredConsultation};
use crate::ids::{ConsultationId, PracticeId, RecordingId, UserId};

/// Why a new segment began. Each is a new stretch of the same recording, never a new recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentReason {
    Start,
    ModeSwitch,
    Reconnect,
    Restart,
}

/// One stretch of a recording, in one mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    index: u32,
    reason: SegmentReason,
    mode: ConsultationMode,
    started_at: Timestamp,
}

impl Segment {
    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn reason(&self) -> SegmentReason {
        self.reason
    }

    pub fn mode(&self) -> ConsultationMode {
        self.mode
    }

    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }
}

/// Where a segment's media goes. Only a [`Recording`] hands these out, so a segment's owner is always its
/// recording's:
///
/// ```compile_fail
/// # use confide_domain::consultation::SegmentRef;
/// # use confide_domain::RecordingId;
/// let forged = SegmentRef { recording: RecordingId::from_uuid(uuid::Uuid::nil()), index: 0 };
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentRef {
    recording: RecordingId,
    index: u32,
}

impl SegmentRef {
    pub fn recording(&self) -> RecordingId {
        self.recording
    }

    pub fn index(&self) -> u32 {
        self.index
    }
}

/// The recording of one consultation, bound to its consultation, patient, clinician and practice from the
/// moment the consultation starts. It has no public constructor and no setters: [`super::Consultation::start`]
/// makes it, and only the consultation's own steps add segments to it.
///
/// ```compile_fail
/// # use confide_domain::consultation::{Recording, SegmentReason, ConsultationMode};
/// # use confide_domain::Timestamp;
/// fn graft(recording: &mut Recording) {
///     recording.append(SegmentReason::Reconnect, ConsultationMode::Video, Timestamp::UNIX_EPOCH);
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    id: RecordingId,
    binding: Binding,
    segments: Vec<Segment>,
}

/// A recording as the store keeps it: its row, with its own copy of the owners for lookups, and its
/// segments' rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecording {
    pub id: RecordingId,
    pub consultation: ConsultationId,
    pub patient: UserId,
    pub clinician: UserId,
    pub practice: PracticeId,
    pub segments: Vec<StoredSegment>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredSegment {
    pub index: u32,
    pub reason: SegmentReason,
    pub mode: ConsultationMode,
    pub started_at: Timestamp,
}

impl Recording {
    /// Only a consultation's start calls this, with the consultation's own binding.
    pub(super) fn open(
        id: RecordingId,
        binding: Binding,
        mode: ConsultationMode,
        at: Timestamp,
    ) -> Recording {
        Recording {
            id,
            binding,
            segments: vec![Segment {
                index: 0,
                reason: SegmentReason::Start,
                mode,
                started_at: at,
            }],
        }
    }

    /// Only the consultation's steps call this, after checking the step is allowed.
    pub(super) fn append(
        &mut self,
        reason: SegmentReason,
        mode: ConsultationMode,
        at: Timestamp,
    ) -> SegmentRef {
        let index = self.segments.len() as u32;
        self.segments.push(Segment {
            index,
            reason,
            mode,
            started_at: at,
        });
        SegmentRef {
            recording: self.id,
            index,
        }
    }

    pub fn id(&self) -> RecordingId {
        self.id
    }

    /// The consultation, appointment, patient, clinician and practice this recording belongs to.
    pub fn binding(&self) -> Binding {
        self.binding
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn segment_ref(&self, index: u32) -> Option<SegmentRef> {
        self.segments.get(index as usize).map(|s| SegmentRef {
            recording: self.id,
            index: s.index,
        })
    }

    /// The rows the store writes.
    pub fn stored(&self) -> StoredRecording {
        StoredRecording {
            id: self.id,
            consultation: self.binding.consultation,
            patient: self.binding.patient,
            clinician: self.binding.clinician,
            practice: self.binding.practice,
            segments: self
                .segments
                .iter()
                .map(|s| StoredSegment {
                    index: s.index,
                    reason: s.reason,
                    mode: s.mode,
                    started_at: s.started_at,
                })
                .collect(),
        }
    }

    /// For persistence only: the store rebuilding a recording it wrote, to list or play it. The owners are
    /// taken from the consultation's row, and the recording's row must name that consultation and agree
    /// with it on every owner, so a row that was altered or mixed up is refused rather than shown to
    /// someone. Its segments must run 0, 1, 2, … from one start segment, in time order.
    pub fn restore_from_storage(
        row: StoredRecording,
        consultation: &StoredConsultation,
    ) -> Result<Recording, RestoreError> {
        let binding = consultation.binding();
        if row.id != consultation.recording
            || row.consultation != binding.consultation
            || row.patient != binding.patient
            || row.clinician != binding.clinician
            || row.practice != binding.practice
        {
            return Err(RestoreError::OwnerMismatch {
                recording: row.id,
                consultation: consultation.id,
            });
        }
        let mut segments: Vec<Segment> = Vec::with_capacity(row.segments.len());
        for (expected, s) in (0u32..).zip(row.segments) {
            if s.index != expected {
                return Err(RestoreError::SegmentOutOfPlace {
                    expected,
                    found: s.index,
                });
            }
            if (expected == 0) != (s.reason == SegmentReason::Start) {
                return Err(RestoreError::StartSegment { index: s.index });
            }
            if segments.last().is_some_and(|prev| s.started_at < prev.started_at) {
                return Err(RestoreError::SegmentOutOfOrder { index: s.index });
            }
            segments.push(Segment {
                index: s.index,
                reason: s.reason,
                mode: s.mode,
                started_at: s.started_at,
            });
        }
        if segments.is_empty() {
            return Err(RestoreError::StartSegment { index: 0 });
        }
        Ok(Recording {
            id: row.id,
            binding,
            segments,
        })
    }
}
