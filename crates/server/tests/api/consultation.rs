//! A booked video consultation, as the call tests start from, and its recording as they read it back.

use std::path::PathBuf;

use confide_domain::consultation::{ConsultationMode, SegmentReason};
use confide_domain::identity::Role;
use confide_domain::policy::{Context, Principal, actions, authorize};
use confide_domain::{AppointmentId, PracticeId, RecordingId};
use confide_media::sfu::recorder::segment_path;
use confide_media::{DataKey, MasterKey, SegmentReader, Track, WrappedKey};
use confide_server::AppState;
use jiff::civil::Date;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{Client, Seeded, TestApp, at, register};
use crate::peer::Marker;

/// A consultation's patient and clinician, logged in, and its appointment.
pub struct Booked {
    pub practice: PracticeId,
    pub patient: Seeded,
    pub patient_api: Client,
    pub clinician: Seeded,
    pub clinician_api: Client,
    pub appointment: String,
}

impl Booked {
    /// A new clinician at `practice` who works Mondays 09:00 to 12:00, and a new patient registered
    /// there who books them for video on `monday` at `hour`:00 (the clock must be before it).
    pub async fn new(app: &TestApp, practice: PracticeId, monday: Date, hour: i8) -> Booked {
        let clinician = app.user(Role::Clinician, Some(practice), true).await;
        let clinician_api = app.login(&clinician).await;
        let (status, body) = clinician_api
            .post(
                &format!("/api/v1/clinicians/{}/availability/rules", clinician.id),
                json!({"weekday": 1, "start": "09:00", "end": "12:00", "slot_minutes": 15, "kinds": "either"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let patient = app.user(Role::Patient, None, false).await;
        let patient_api = app.login(&patient).await;
        register(&patient_api, &clinician_api, practice).await;
        let (status, body) = patient_api
            .post(
                "/api/v1/appointments",
                json!({"clinician_id": clinician.id, "start": at(monday, hour, 0).to_string(), "kind": "video"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Booked {
            practice,
            patient,
            patient_api,
            clinician,
            clinician_api,
            appointment: body["id"].as_str().unwrap().to_owned(),
        }
    }

    pub fn path(&self, what: &str) -> String {
        format!("/api/v1/appointments/{}/{what}", self.appointment)
    }

    /// The patient checks in (the clock must be near the appointment).
    pub async fn check_in(&self) {
        let (status, body) = self.patient_api.post(&self.path("check-in"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{}: check-in: {body}", self.appointment);
    }

    /// The clinician starts the consultation the patient checked in for.
    pub async fn start(&self) {
        let (status, body) = self.clinician_api.post(&self.path("start"), json!({})).await;
        assert_eq!(
            (status, &body["status"]),
            (StatusCode::OK, &json!("in_consultation")),
            "{}: start: {body}",
            self.appointment
        );
    }

    pub async fn check_in_and_start(&self) {
        self.check_in().await;
        self.start().await;
    }
}

/// A consultation's recording as a participant's grant reads it, decrypted with its data key.
pub struct Recording {
    pub id: RecordingId,
    pub key: DataKey,
    /// Each segment's index, reason and mode.
    pub segments: Vec<(u32, SegmentReason, ConsultationMode)>,
    /// Each segment's file.
    pub paths: Vec<PathBuf>,
    /// Each segment's frames: who they are filed under, and the marker they carry.
    pub frames: Vec<Vec<(Uuid, Marker)>>,
    /// Each segment's first and last frame time.
    pub times: Vec<(u64, u64)>,
}

impl Recording {
    /// The recording of `appointment`'s consultation, through `reader`'s grant to join it, its key
    /// unwrapped by `master`.
    pub async fn read(state: &AppState, master: &MasterKey, appointment: &str, reader: &Seeded) -> Recording {
        let store = &state.store;
        let appointment: AppointmentId = appointment.parse().unwrap();
        let facts = store.consultation_ref(appointment).await.unwrap().unwrap();
        let principal = Principal {
            user: reader.id,
            role: reader.role,
            practice: reader.practice,
        };
        let grant =
            authorize::<actions::JoinConsultation>(&principal, facts, &Context { mfa_verified: true })
                .unwrap();
        let call = store.consultation_call(&grant).await.unwrap().unwrap();
        let id = call.recording;
        let stored = store.recording_key(&grant).await.unwrap();
        let wrapped = hex::decode(stored.unwrap_or_else(|| panic!("recording {id} has no key"))).unwrap();
        let key = WrappedKey::from_bytes(&wrapped)
            .unwrap()
            .unwrap(master, id.as_uuid())
            .unwrap_or_else(|e| panic!("recording {id}'s key: {e}"));
        let dir = state.config.recordings_dir();
        let (mut paths, mut frames, mut times) = (Vec::new(), Vec::new(), Vec::new());
        for segment in &call.segments {
            let path = segment_path(&dir, id.as_uuid(), segment.index);
            let read: Vec<_> = SegmentReader::open(&path, &key, id.as_uuid(), segment.index)
                .unwrap_or_else(|e| panic!("recording {id} segment {}: {e}", segment.index))
                .map(|frame| {
                    frame.unwrap_or_else(|e| {
                        panic!("recording {id} segment {} is damaged: {e}", segment.index)
                    })
                })
                .collect();
            let stamps = read.iter().map(|f| f.timestamp_us);
            times.push((stamps.clone().min().unwrap_or(0), stamps.max().unwrap_or(0)));
            frames.push(
                read.iter()
                    .map(|f| (f.sender.0, Marker::of_frame(f.track == Track::Video, &f.payload)))
                    .collect(),
            );
            paths.push(path);
        }
        Recording {
            id,
            key,
            segments: call
                .segments
                .iter()
                .map(|s| (s.index, s.reason, s.mode))
                .collect(),
            paths,
            frames,
            times,
        }
    }

    /// The markers of segment `index`'s frames.
    pub fn markers(&self, index: usize) -> impl Iterator<Item = &Marker> {
        self.frames[index].iter().map(|(_, m)| m)
    }
}
