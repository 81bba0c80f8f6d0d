//! The incident Confide exists to prevent, at scale: in June 2020 a release that changed how calls
//! switch between audio and video filed recordings in the wrong patients' histories.
//!
//! Twenty consultations run at once, each a patient and their clinician with str0m peers in the
//! browsers' place. Every frame a peer sends carries its consultation's id. Each call follows its own
//! seeded script of audio ↔ video switches (by either side) and reconnects (with or without saying
//! goodbye), all concurrently, and the server restarts in the middle of every call. Afterwards every
//! recording must hold its own consultation's frames only, from both people, in the segments and modes
//! the script implies, and be listed for its own patient and clinician only (in the store and by
//! `GET /api/v1/recordings`).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use confide_domain::consultation::{ConsultationMode, SegmentReason};
use confide_domain::identity::Role;
use confide_domain::policy::{Context, Principal, actions, authorize};
use confide_domain::{PracticeId, RecordingId};
use confide_media::MasterKey;
use confide_server::Clock as _;
use confide_store::testing::TestDatabase;
use futures_util::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::consultation::{Booked, Recording};
use crate::helpers::{Client, Seeded, TestApp, login_at};
use crate::peer::{Peer, Peers, numbers};

/// The scripts, the world and the master key all come from this seed.
const SEED: u64 = 0x2020_0611;
const CONSULTATIONS: usize = 20;
const PRACTICES: usize = 4;
/// Phases of media per call; an event (switch, reconnect, restart) may come before each but the first.
const PHASES: u32 = 7;
/// The server restarts before this phase, in every call.
const RESTART_PHASE: u32 = 3;
/// Frames of each kind each peer sends per phase, 20 ms apart.
const FRAMES: u32 = 6;
/// Bound on each wait; a call whose step takes longer fails, naming the step.
const WAIT: Duration = Duration::from_secs(20);

use crate::helpers::{at, next_monday, set_clock};
use ConsultationMode::{AudioOnly, Video};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Patient,
    Clinician,
}

const BOTH: [Who; 2] = [Who::Patient, Who::Clinician];

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Patient => "patient",
            Who::Clinician => "clinician",
        }
    }

    fn other(self) -> Who {
        match self {
            Who::Patient => Who::Clinician,
            Who::Clinician => Who::Patient,
        }
    }

    fn slot(self) -> usize {
        self as usize
    }

    fn random(rng: &mut StdRng) -> Who {
        if rng.random_bool(0.5) {
            Who::Patient
        } else {
            Who::Clinician
        }
    }
}

fn mode_name(mode: ConsultationMode) -> &'static str {
    match mode {
        Video => "video",
        AudioOnly => "audio_only",
    }
}

/// What happens in a call before a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Quiet,
    /// `by` switches between audio only and video, and the other side follows.
    Switch {
        by: Who,
    },
    /// `who` loses the connection and joins again; `leave_first` if their browser said goodbye.
    Reconnect {
        who: Who,
        leave_first: bool,
    },
    /// The server restarts; `first` joins again first.
    Restart {
        first: Who,
    },
}

/// A call's events, one before each phase (none before the first). Every call switches at least once,
/// so that each recording must hold both modes.
fn script(rng: &mut StdRng) -> Vec<Event> {
    let mut events = vec![Event::Quiet];
    for phase in 1..PHASES {
        events.push(if phase == RESTART_PHASE {
            Event::Restart {
                first: Who::random(rng),
            }
        } else {
            match rng.random_range(0..5) {
                0 => Event::Quiet,
                1 | 2 => Event::Switch { by: Who::random(rng) },
                _ => Event::Reconnect {
                    who: Who::random(rng),
                    leave_first: rng.random_bool(0.5),
                },
            }
        });
    }
    if !events.iter().any(|e| matches!(e, Event::Switch { .. })) {
        events[1] = Event::Switch { by: Who::random(rng) };
    }
    events
}

/// What a script must leave in the store and in the recording.
struct Expected {
    /// Each segment's reason and mode, in order.
    segments: Vec<(SegmentReason, ConsultationMode)>,
    /// For each phase, the segment its frames belong in and the call's mode.
    phases: Vec<(usize, ConsultationMode)>,
}

fn expected(events: &[Event]) -> Expected {
    let mut segments = vec![(SegmentReason::Start, Video)];
    let mut phases = Vec::new();
    let mut mode = Video;
    for event in events {
        match event {
            Event::Quiet => {}
            Event::Switch { .. } => {
                mode = if mode == Video { AudioOnly } else { Video };
                segments.push((SegmentReason::ModeSwitch, mode));
            }
            Event::Reconnect { .. } => segments.push((SegmentReason::Reconnect, mode)),
            Event::Restart { .. } => segments.push((SegmentReason::Restart, mode)),
        }
        phases.push((segments.len() - 1, mode));
    }
    Expected { segments, phases }
}

fn all() -> BTreeSet<u32> {
    (0..FRAMES).collect()
}

/// One consultation as the test seeded it.
#[derive(Clone)]
struct Consultation {
    /// "C07", for messages.
    name: String,
    /// The consultation's id: every frame of its call carries it.
    id: String,
    appointment: String,
    practice: PracticeId,
    patient: Seeded,
    clinician: Seeded,
}

impl Consultation {
    fn label(&self, who: Who) -> String {
        format!("{}/{}", self.id, who.name())
    }
}

/// One call in progress, driven by its own task.
struct Call {
    c: Consultation,
    apis: [Client; 2],
    peers: Peers<Peer>,
    mode: ConsultationMode,
}

impl Call {
    fn path(&self, what: &str) -> String {
        format!("/api/v1/appointments/{}/{what}", self.c.appointment)
    }

    /// `who` joins (again) from a new peer in the call's mode, replacing any connection they had.
    async fn join(&mut self, who: Who, phase: u32) {
        let label = self.c.label(who);
        let mut peer = Peer::new(&label).await;
        let offer = peer.offer(self.mode == Video);
        let path = self.path("call");
        let (status, body) = peer
            .signal(&self.apis[who.slot()], &path, offer, mode_name(self.mode))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}: the {} joins before phase {phase}: {body}",
            self.c.name,
            who.name()
        );
        self.peers.put(peer);
        let what = format!("{}: the {} to connect", self.c.name, who.name());
        self.peers.run_until(&what, |ps| ps.get(&label).connected).await;
    }

    /// `by` switches mode, then the other side renegotiates to match.
    async fn switch(&mut self, by: Who, phase: u32) {
        self.mode = if self.mode == Video { AudioOnly } else { Video };
        for who in [by, by.other()] {
            let mode = self.mode;
            let path = self.path("call/mode");
            let peer = self.peers.get_mut(&self.c.label(who));
            let offer = if mode == Video {
                peer.offer_with_video()
            } else {
                peer.offer_without_video()
            };
            let (status, body) = peer
                .signal(&self.apis[who.slot()], &path, offer, mode_name(mode))
                .await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{}: the {} switches to {mode:?} before phase {phase}: {body}",
                self.c.name,
                who.name()
            );
        }
    }

    async fn reconnect(&mut self, who: Who, leave_first: bool, phase: u32) {
        self.check_received();
        self.peers.remove(&self.c.label(who));
        if leave_first {
            let (status, body) = self.apis[who.slot()]
                .post(&self.path("call/leave"), json!({}))
                .await;
            assert_eq!(
                status,
                StatusCode::NO_CONTENT,
                "{}: the {} leaves before phase {phase}: {body}",
                self.c.name,
                who.name()
            );
        }
        self.join(who, phase).await;
    }

    /// Both send a phase's frames (video too, in a video call), and each gets all of the other's.
    async fn exchange(&mut self, phase: u32) {
        let video = self.mode == Video;
        let labels = BOTH.map(|who| self.c.label(who));
        let senders = [(labels[0].as_str(), video), (labels[1].as_str(), video)];
        self.peers.send_phase(phase, FRAMES, &senders).await;
        let kinds: &[&str] = if video { &["audio", "video"] } else { &["audio"] };
        let what = format!("{}: phase {phase} to arrive", self.c.name);
        self.peers
            .run_until(&what, |ps| {
                BOTH.iter().all(|&to| {
                    let (to, from) = (&labels[to.slot()], &labels[to.other().slot()]);
                    kinds
                        .iter()
                        .all(|kind| ps.get(to).received(from, kind, phase) == all())
                })
            })
            .await;
        self.check_received();
    }

    /// Each peer got only its own call's frames, and none of its own back.
    fn check_received(&self) {
        for peer in self.peers.iter() {
            peer.assert_only_from_own_group();
        }
    }
}

/// Runs a call's script. Before the restart it reports on `ready` and waits for clients of the new
/// server on `resumed`.
async fn drive(
    c: Consultation,
    apis: [Client; 2],
    events: Vec<Event>,
    ready: mpsc::Sender<()>,
    resumed: oneshot::Receiver<[Client; 2]>,
) -> [Client; 2] {
    let mut call = Call {
        c,
        apis,
        peers: Peers::new(WAIT),
        mode: Video,
    };
    let mut resumed = Some(resumed);
    call.join(Who::Patient, 0).await;
    call.join(Who::Clinician, 0).await;
    // The SFU's side of a connection comes up a moment after the peer's.
    call.peers.run_for(Duration::from_millis(300)).await;
    for (phase, event) in (0..).zip(events) {
        match event {
            Event::Quiet => {}
            Event::Switch { by } => call.switch(by, phase).await,
            Event::Reconnect { who, leave_first } => call.reconnect(who, leave_first, phase).await,
            Event::Restart { first } => {
                call.check_received();
                call.peers = Peers::new(WAIT);
                ready.send(()).await.unwrap();
                call.apis = resumed
                    .take()
                    .expect("one restart")
                    .await
                    .expect("the test resumes the calls");
                call.join(first, phase).await;
                call.join(first.other(), phase).await;
            }
        }
        if event != Event::Quiet {
            call.peers.run_for(Duration::from_millis(300)).await;
        }
        call.exchange(phase).await;
        // Frames reach the recorder apart from signaling: a pause keeps them in their segment.
        call.peers.run_for(Duration::from_millis(200)).await;
    }
    let (status, body) = call.apis[Who::Clinician.slot()]
        .post(&call.path("complete"), json!({}))
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("completed")),
        "{}: completing: {body}",
        call.c.name
    );
    call.apis
}

/// Waits for `count` calls to report ready; a call's task that ended before (it failed) fails the test
/// with its own message.
async fn wait_ready<T>(
    ready: &mut mpsc::Receiver<()>,
    count: usize,
    tasks: &mut [tokio::task::JoinHandle<T>],
) {
    let mut seen = 0;
    while seen < count {
        tokio::select! {
            Some(_) = ready.recv() => seen += 1,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if let Some(task) = tasks.iter_mut().find(|t| t.is_finished()) {
                    match task.await {
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(e) => panic!("a call ended before the restart: {e}"),
                        Ok(_) => panic!("a call ended before the restart"),
                    }
                }
            }
        }
    }
}

/// Checks a recording against its consultation's script: only its own frames, each sent by the
/// participant it names, every phase in the segment the script put it in and nowhere else, video only
/// while the call was in video, and both modes present.
fn check_recording(c: &Consultation, rec: &Recording, expect: &Expected, names: &HashMap<String, String>) {
    let whose = format!("{}'s recording {}", c.name, rec.id);
    let segments: Vec<_> = rec.segments.iter().map(|&(_, r, m)| (r, m)).collect();
    assert_eq!(segments, expect.segments, "{whose}: its segments");
    let indices: Vec<u32> = rec.segments.iter().map(|s| s.0).collect();
    assert_eq!(
        indices,
        (0..indices.len() as u32).collect::<Vec<_>>(),
        "{whose}: segment numbers"
    );
    for (s, frames) in rec.frames.iter().enumerate() {
        for (sender, marker) in frames {
            let (consultation, who) = marker.label.split_once('/').unwrap();
            assert!(
                consultation == c.id,
                "{whose}, segment {s}: a frame of {} ({marker:?})",
                names.get(consultation).map_or("no consultation", String::as_str)
            );
            let sent_by = if who == "patient" {
                &c.patient
            } else {
                &c.clinician
            };
            assert_eq!(
                *sender,
                sent_by.id.as_uuid(),
                "{whose}, segment {s}: {marker:?} is filed under another sender"
            );
        }
    }
    let numbers = |s: usize, label: &str, kind: &str, phase: u32| numbers(rec.markers(s), label, kind, phase);
    for (phase, &(segment, mode)) in (0..).zip(&expect.phases) {
        for who in BOTH {
            let label = c.label(who);
            for kind in ["audio", "video"] {
                let present = kind == "audio" || mode == Video;
                for s in 0..rec.frames.len() {
                    let expected = if present && s == segment {
                        all()
                    } else {
                        BTreeSet::new()
                    };
                    assert_eq!(
                        numbers(s, &label, kind, phase),
                        expected,
                        "{whose}, segment {s}: the {}'s {kind} of phase {phase} ({mode:?}, belongs in segment {segment})",
                        who.name()
                    );
                }
            }
        }
    }
    for (mode, kind) in [(AudioOnly, "audio"), (Video, "video")] {
        assert!(
            rec.segments
                .iter()
                .zip(&rec.frames)
                .any(|(s, frames)| s.2 == mode && frames.iter().any(|(_, m)| m.kind == kind)),
            "{whose}: no {kind} recorded in a {mode:?} segment"
        );
    }
}

async fn incident_at_scale(db: Option<TestDatabase>) {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(SEED);
    let keys = tempfile::tempdir().unwrap();
    let master_path = keys.path().join("master.key");
    let mut master_bytes = [0u8; 32];
    rng.fill_bytes(&mut master_bytes);
    std::fs::write(&master_path, master_bytes).unwrap();
    let master = MasterKey::load(&master_path).unwrap();
    let configured = master_path.clone();
    let app = TestApp::spawn_with(db, move |c| c.master_key_file = Some(configured)).await;

    let monday = next_monday();
    set_clock(&app.clock, at(monday, 8, 0));
    let mut practices = Vec::new();
    for p in 0..PRACTICES {
        practices.push(app.practice(&format!("Practice {p}")).await);
    }
    let booked =
        join_all((0..CONSULTATIONS).map(|i| Booked::new(&app, practices[i % PRACTICES], monday, 9))).await;
    set_clock(&app.clock, at(monday, 8, 55));
    let mut consultations = Vec::new();
    let mut clients = Vec::new();
    for (index, b) in booked.into_iter().enumerate() {
        b.check_in_and_start().await;
        let facts = app
            .running
            .state
            .store
            .consultation_ref(b.appointment.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        consultations.push(Consultation {
            name: format!("C{index:02}"),
            id: facts.id.to_string(),
            appointment: b.appointment,
            practice: b.practice,
            patient: b.patient,
            clinician: b.clinician,
        });
        clients.push([b.patient_api, b.clinician_api]);
    }
    let names: HashMap<String, String> = consultations
        .iter()
        .map(|c| (c.id.clone(), c.name.clone()))
        .collect();
    let scripts: Vec<Vec<Event>> = (0..CONSULTATIONS).map(|_| script(&mut rng)).collect();
    let seeded_in = started.elapsed();

    let (ready_tx, mut ready) = mpsc::channel(CONSULTATIONS);
    let mut resume = Vec::new();
    let mut tasks = Vec::new();
    for ((c, apis), events) in consultations.iter().cloned().zip(clients).zip(&scripts) {
        let (resume_tx, resumed) = oneshot::channel();
        resume.push(resume_tx);
        tasks.push(tokio::spawn(drive(
            c,
            apis,
            events.clone(),
            ready_tx.clone(),
            resumed,
        )));
    }
    drop(ready_tx);

    // Every call is in the middle of its script: the server stops as a deployment stops it and is
    // started again on the same data, with the same configuration.
    wait_ready(&mut ready, CONSULTATIONS, &mut tasks).await;
    let TestApp { running, clock, .. } = app;
    assert_eq!(
        running.state.calls.sfu().recorder_dropped(),
        0,
        "frames the recorder missed before the restart"
    );
    let config = (*running.state.config).clone();
    running.stop().await.unwrap();
    // A minute on, so that the clinicians' next authenticator codes are not the ones already spent.
    clock.advance(Duration::from_secs(60));
    let running = confide_server::spawn(config, clock.clone()).await.unwrap();
    let now_secs = (clock.now_ms() / 1000) as u64;
    let logins = join_all(consultations.iter().map(|c| async {
        [
            login_at(running.url(), now_secs, &c.patient).await,
            login_at(running.url(), now_secs, &c.clinician).await,
        ]
    }))
    .await;
    for (tx, apis) in resume.into_iter().zip(logins) {
        assert!(tx.send(apis).is_ok(), "a call ended during the restart");
    }
    let mut apis = Vec::new();
    for task in tasks {
        match task.await {
            Ok(clients) => apis.push(clients),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    assert_eq!(
        running.state.calls.sfu().recorder_dropped(),
        0,
        "frames the recorder missed after the restart"
    );
    let called_in = started.elapsed() - seeded_in;

    // Every recording, read back with its own key.
    let state = &running.state;
    let mut recordings = HashMap::new();
    for (c, events) in consultations.iter().zip(&scripts) {
        let rec = Recording::read(state, &master, &c.appointment, &c.patient).await;
        check_recording(c, &rec, &expected(events), &names);
        recordings.insert(rec.id, c.name.clone());
    }
    assert_eq!(recordings.len(), CONSULTATIONS, "one recording per consultation");

    // Each patient's list holds their own recording, bound to their consultation and clinician.
    for c in &consultations {
        let patient = Principal {
            user: c.patient.id,
            role: Role::Patient,
            practice: None,
        };
        let on = state.store.patient_ref(c.patient.id).await.unwrap().unwrap();
        let grant =
            authorize::<actions::ListRecordings>(&patient, on, &Context { mfa_verified: true }).unwrap();
        let listed = state.store.patient_recordings(&grant).await.unwrap();
        let listed_names: Vec<_> = listed
            .iter()
            .map(|r| {
                recordings
                    .get(&r.id)
                    .map_or("an unknown recording", String::as_str)
            })
            .collect();
        assert_eq!(
            listed_names,
            [c.name.as_str()],
            "{}'s patient's recordings",
            c.name
        );
        let r = &listed[0];
        assert_eq!(
            (r.consultation.to_string(), r.patient, r.clinician, r.practice),
            (c.id.clone(), c.patient.id, c.clinician.id, c.practice),
            "{}: recording {}'s owners",
            c.name,
            r.id
        );
    }

    // And through the API: each patient and each clinician sees that one recording only.
    let ids: HashMap<&str, &RecordingId> = recordings.iter().map(|(id, name)| (name.as_str(), id)).collect();
    for (c, clients) in consultations.iter().zip(&apis) {
        for who in BOTH {
            let (status, body) = clients[who.slot()].get("/api/v1/recordings").await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{}: the {}'s recordings: {body}",
                c.name,
                who.name()
            );
            let listed: Vec<String> = body
                .as_array()
                .unwrap_or_else(|| panic!("{}: the {}'s recordings: {body}", c.name, who.name()))
                .iter()
                .map(|r| {
                    let id: RecordingId = r["id"].as_str().unwrap().parse().unwrap();
                    recordings
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| format!("unknown recording {id}"))
                })
                .collect();
            assert_eq!(
                listed,
                [c.name.as_str()],
                "{}: the {} lists recordings of these consultations (own: {})",
                c.name,
                who.name(),
                ids[c.name.as_str()]
            );
        }
    }

    let switches = scripts
        .iter()
        .flatten()
        .filter(|e| matches!(e, Event::Switch { .. }))
        .count();
    let reconnects = scripts
        .iter()
        .flatten()
        .filter(|e| matches!(e, Event::Reconnect { .. }))
        .count();
    assert!(reconnects > 0, "the script reconnects somewhere");
    eprintln!(
        "incident: {CONSULTATIONS} consultations, {switches} switches, {reconnects} reconnects, 1 restart; \
         seeded in {seeded_in:.1?}, called in {called_in:.1?}"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_at_scale_on_sqlite() {
    incident_at_scale(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_at_scale_on_postgres() {
    if let Some(db) = TestDatabase::postgres().await {
        incident_at_scale(Some(db)).await;
    }
}
