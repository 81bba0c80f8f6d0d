//! Recordings after the call, end to end: a real call between str0m peers through the server's SFU is
//! completed, remuxed into encrypted WebM playback copies (the recording's own, with everyone's tracks,
//! and one per participant), listed and played back with HTTP ranges by its two participants only; a colleague opens it by break-glass with a reason the patient sees; the
//! practice turns replay off and on; retention crypto-erases it.

use std::time::{Duration, Instant};

use confide_domain::PracticeId;
use confide_domain::identity::Role;
use confide_server::{Clock as _, ServerConfig};
use confide_store::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};
use str0m::media::MediaKind;

use crate::helpers::{Client, Seeded, TestApp, login_at, not_found_body, register};
use crate::helpers::{at, next_monday, set_clock};
use crate::peer::Peer;

const EBML_MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];

/// A practice whose clinician and registered patient have had a recorded call, and the people around
/// them who must not see it.
struct World {
    practice: PracticeId,
    patient: Seeded,
    patient_api: Client,
    clinician: Seeded,
    clinician_api: Client,
    /// A colleague of the clinician at the same practice, who was not in the call.
    colleague: Seeded,
    colleague_api: Client,
    admin_api: Client,
    stranger_api: Client,
    other_clinician_api: Client,
    recording: String,
    /// How long the peers sent media for, on the wall clock.
    call_ms: u64,
}

/// Books, starts, calls for about `seconds` with audio and video both ways, and completes.
async fn recorded_call(app: &TestApp, seconds: u64) -> World {
    let monday = next_monday();
    set_clock(&app.clock, at(monday, 8, 0));
    let practice = app.practice("Riverside Surgery").await;
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
    let colleague = app.user(Role::Clinician, Some(practice), true).await;
    let colleague_api = app.login(&colleague).await;
    let admin = app.user(Role::PracticeAdmin, Some(practice), true).await;
    let admin_api = app.login(&admin).await;
    let stranger = app.user(Role::Patient, None, false).await;
    let stranger_api = app.login(&stranger).await;
    register(&stranger_api, &clinician_api, practice).await;
    let elsewhere = app.practice("Hilltop Surgery").await;
    let other_clinician = app.user(Role::Clinician, Some(elsewhere), true).await;
    let other_clinician_api = app.login(&other_clinician).await;

    let (status, body) = patient_api
        .post(
            "/api/v1/appointments",
            json!({"clinician_id": clinician.id, "start": at(monday, 9, 0).to_string(), "kind": "video"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let appointment = body["id"].as_str().unwrap().to_owned();
    let path = |what: &str| format!("/api/v1/appointments/{appointment}/{what}");
    set_clock(&app.clock, at(monday, 8, 55));
    assert_eq!(
        patient_api.post(&path("check-in"), json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        clinician_api.post(&path("start"), json!({})).await.0,
        StatusCode::OK
    );

    let mut peers = Vec::new();
    for (label, api) in [("patient", &patient_api), ("clinician", &clinician_api)] {
        let mut peer = Peer::new(&format!("R/{label}")).await;
        let offer = peer.offer(true);
        let (status, body) = peer.signal(api, &path("call"), offer, "video").await;
        assert_eq!(status, StatusCode::OK, "{label} joins: {body}");
        peers.push(peer);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !peers.iter().all(|p| p.connected) {
        assert!(Instant::now() < deadline, "the peers did not connect");
        for p in &mut peers {
            p.pump();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let settle = Instant::now() + Duration::from_millis(200);
    while Instant::now() < settle {
        for p in &mut peers {
            p.pump();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // Audio every 20 ms and video every 40 ms, both ways, paced by the wall clock.
    let started = Instant::now();
    let frames = (seconds * 1000 / 20) as u32;
    for n in 0..frames {
        let due = started + Duration::from_millis(20 * u64::from(n));
        while Instant::now() < due {
            for p in &mut peers {
                p.pump();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for p in &mut peers {
            p.send(MediaKind::Audio, 1, n);
            if n % 2 == 0 {
                p.send(MediaKind::Video, 1, n / 2);
            }
        }
    }
    let call_ms = started.elapsed().as_millis() as u64;
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle {
        for p in &mut peers {
            p.pump();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (status, body) = clinician_api.post(&path("complete"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, list) = patient_api.get("/api/v1/recordings").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    World {
        practice,
        patient,
        patient_api,
        clinician,
        clinician_api,
        colleague,
        colleague_api,
        admin_api,
        stranger_api,
        other_clinician_api,
        recording: list[0]["id"].as_str().unwrap().to_owned(),
        call_ms,
    }
}

/// Waits until the recording's playback copy is made (the job runner is woken when the call ends).
async fn wait_until_ready(api: &Client, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = api.get(&format!("/api/v1/recordings/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        match body["status"].as_str().unwrap() {
            "ready" => return body,
            "processing" | "recording" => {}
            other => panic!("the recording became {other}: {body}"),
        }
        assert!(
            Instant::now() < deadline,
            "the recording was not remuxed in time: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET with a `Range` header: status, headers and the raw body.
async fn ranged(
    api: &Client,
    url: &str,
    range: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = api.http.get(url);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// A play session: the ticketed media URL.
async fn ticket(app: &TestApp, api: &Client, id: &str) -> (StatusCode, Value, String) {
    let (status, body) = api
        .post(&format!("/api/v1/recordings/{id}/playback"), json!({}))
        .await;
    let url = body["media_url"].as_str().map(|u| app.url(u)).unwrap_or_default();
    (status, body, url)
}

/// The kinds of a WebM file's tracks, in number order.
fn webm_tracks(bytes: &[u8]) -> Vec<String> {
    let file =
        matroska_demuxer::MatroskaFile::open(std::io::Cursor::new(bytes.to_vec())).expect("a WebM file");
    file.tracks()
        .iter()
        .map(|t| format!("{:?}", t.track_type()))
        .collect()
}

fn webm_duration_ms(bytes: &[u8]) -> f64 {
    let file =
        matroska_demuxer::MatroskaFile::open(std::io::Cursor::new(bytes.to_vec())).expect("a WebM file");
    let info = file.info();
    let scale = info.timestamp_scale().get() as f64;
    info.duration().expect("a duration") * scale / 1_000_000.0
}

/// The patient's access log entries by `actor` for `action`.
async fn log_entries(world: &World, actor: &Seeded, action: &str) -> Vec<Value> {
    let (status, log) = world
        .patient_api
        .get(&format!("/api/v1/patients/{}/access-log", world.patient.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    log.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor_id"] == json!(actor.id) && e["action"] == action)
        .cloned()
        .collect()
}

async fn recordings_end_to_end(db: Option<TestDatabase>) {
    let app = TestApp::spawn_with(db, |_| {}).await;
    let w = recorded_call(&app, 3).await;
    let id = w.recording.clone();
    let entry = format!("/api/v1/recordings/{id}");
    let media = format!("/api/v1/recordings/{id}/media");
    let patient_media = format!("{media}/{}", w.patient.id);
    let clinician_media = format!("{media}/{}", w.clinician.id);

    let ready = wait_until_ready(&w.patient_api, &id).await;
    for (who, api, me) in [
        ("patient", &w.patient_api, &w.patient),
        ("clinician", &w.clinician_api, &w.clinician),
    ] {
        let (status, list) = api.get("/api/v1/recordings").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let ids: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [id.as_str()], "{who}'s list");
        let (status, body) = api.get(&entry).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ready");
        assert_eq!(body["modes"], json!(["video"]));
        assert_eq!(body["media_url"], json!(media));
        let participants: Vec<&Value> = body["participants"].as_array().unwrap().iter().collect();
        assert_eq!(participants.len(), 2);
        assert!(participants.iter().any(|p| p["id"] == json!(me.id)), "{body}");
        for p in &participants {
            assert_eq!(
                p["media_url"],
                json!(format!("{media}/{}", p["id"].as_str().unwrap())),
                "each participant's own copy: {body}"
            );
        }
        assert!(body["ended_at"].as_i64().unwrap() >= body["started_at"].as_i64().unwrap());
    }
    let duration = ready["duration_ms"].as_i64().unwrap() as f64;
    let call = w.call_ms as f64;
    assert!(
        (duration - call).abs() <= call * 0.1,
        "the recording lasts {duration} ms, the call {call} ms"
    );

    // Playback by both participants, in ranges; each play session is audited once.
    let mut whole = Vec::new();
    for (api, who) in [(&w.patient_api, &w.patient), (&w.clinician_api, &w.clinician)] {
        let (status, body, url) = ticket(&app, api, &id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, headers, head) = ranged(api, &url, Some("bytes=0-99")).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(headers["accept-ranges"], "bytes");
        assert_eq!(headers["content-type"], "video/webm");
        assert_eq!(head.len(), 100);
        assert_eq!(head[..4], EBML_MAGIC, "a WebM file begins with the EBML magic");
        let total: u64 = headers["content-range"]
            .to_str()
            .unwrap()
            .strip_prefix("bytes 0-99/")
            .unwrap()
            .parse()
            .unwrap();
        let (status, _, all) = ranged(api, &url, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(all.len() as u64, total);
        assert_eq!(all[..100], head[..]);
        // Across a block boundary, and the tail.
        let (status, headers, middle) = ranged(api, &url, Some("bytes=65530-65545")).await;
        if total > 65546 {
            assert_eq!(status, StatusCode::PARTIAL_CONTENT);
            assert_eq!(
                headers["content-range"],
                format!("bytes 65530-65545/{total}").as_str()
            );
            assert_eq!(middle, all[65530..65546]);
        }
        let (status, _, tail) = ranged(api, &url, Some("bytes=-10")).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(tail, all[all.len() - 10..]);
        let (status, headers, _) = ranged(api, &url, Some(&format!("bytes={total}-"))).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(headers["content-range"], format!("bytes */{total}").as_str());
        // Each participant's own copy in the same play session: their audio and video only, as long as
        // the call, and no new access.
        let copies = body["participants"].as_array().unwrap();
        let mut ids: Vec<&str> = copies
            .iter()
            .map(|c| c["participant_id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        let mut expected = [w.patient.id.to_string(), w.clinician.id.to_string()];
        expected.sort_unstable();
        assert_eq!(ids, expected, "one copy per participant: {body}");
        for copy in copies {
            let url = app.url(copy["media_url"].as_str().unwrap());
            let (status, headers, one) = ranged(api, &url, None).await;
            assert_eq!(status, StatusCode::OK, "{copy}");
            assert_eq!(headers["content-type"], "video/webm");
            assert_eq!(one[..4], EBML_MAGIC);
            // The peers' synthetic video has no VP8 keyframe, so the remux keeps their audio only.
            assert_eq!(webm_tracks(&one), ["Audio"], "one participant's sound: {copy}");
            let ms = webm_duration_ms(&one);
            assert!(
                (ms - w.call_ms as f64).abs() <= w.call_ms as f64 * 0.1,
                "{copy}: the copy says {ms} ms, the call took {} ms",
                w.call_ms
            );
            assert!((0..1000).contains(&copy["offset_ms"].as_i64().unwrap()), "{copy}");
            let (status, _, tail) = ranged(api, &url, Some("bytes=-10")).await;
            assert_eq!(status, StatusCode::PARTIAL_CONTENT);
            assert_eq!(tail, one[one.len() - 10..]);
        }
        // In the same session, someone who was not in the call has no copy.
        let unknown = url.replace("/media?", &format!("/media/{}?", uuid::Uuid::new_v4()));
        let (status, _, _) = ranged(api, &unknown, Some("bytes=0-3")).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "no copy of someone who was not there"
        );
        let plays = log_entries(&w, who, "recording.play").await;
        if who.id != w.patient.id {
            assert_eq!(plays.len(), 1, "one play session, one entry: {plays:?}");
        }
        whole = all;
    }
    assert_eq!(
        webm_tracks(&whole),
        ["Audio", "Audio"],
        "the recording's own copy has everyone's tracks"
    );
    let seconds = webm_duration_ms(&whole);
    assert!(
        (seconds - w.call_ms as f64).abs() <= w.call_ms as f64 * 0.1,
        "the WebM says {seconds} ms, the call took {} ms",
        w.call_ms
    );
    // Without a ticket, each request is its own audited access.
    let (status, _, plain) = ranged(&w.clinician_api, &app.url(&media), Some("bytes=0-3")).await;
    assert_eq!(
        (status, plain.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &EBML_MAGIC[..])
    );
    assert_eq!(log_entries(&w, &w.clinician, "recording.play").await.len(), 2);

    // Nobody else: the same 404 on the entry, the media, a play session; absent from their lists.
    let anonymous = app.anonymous();
    for (who, api) in [
        ("another patient of the practice", &w.stranger_api),
        ("a colleague who was not in the call", &w.colleague_api),
        ("a clinician of another practice", &w.other_clinician_api),
        ("the practice admin", &w.admin_api),
    ] {
        for path in [
            entry.clone(),
            media.clone(),
            patient_media.clone(),
            clinician_media.clone(),
        ] {
            let (status, body) = api.get(&path).await;
            assert_eq!(
                (status, body),
                (StatusCode::NOT_FOUND, not_found_body()),
                "{path} as {who}"
            );
        }
        let (status, body) = api.post(&format!("{entry}/playback"), json!({})).await;
        assert_eq!(
            (status, body),
            (StatusCode::NOT_FOUND, not_found_body()),
            "playback as {who}"
        );
        // Someone else's ticket is worth nothing.
        let (_, body, url) = ticket(&app, &w.patient_api, &id).await;
        let (status, _, _) = ranged(api, &url, Some("bytes=0-3")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a stolen ticket as {who}");
        for copy in body["participants"].as_array().unwrap() {
            let url = app.url(copy["media_url"].as_str().unwrap());
            let (status, _, _) = ranged(api, &url, Some("bytes=0-3")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "a stolen ticket as {who}");
        }
        let (status, list) = api.get("/api/v1/recordings").await;
        if status == StatusCode::OK {
            assert!(!list.to_string().contains(&id), "{who}'s list: {list}");
        } else {
            assert_eq!(
                (status, list),
                (StatusCode::NOT_FOUND, not_found_body()),
                "list as {who}"
            );
        }
    }
    for path in [
        entry.clone(),
        media.clone(),
        patient_media.clone(),
        clinician_media.clone(),
        "/api/v1/recordings".to_owned(),
    ] {
        assert_eq!(anonymous.get(&path).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }

    // The pages: the list and the player for the two participants, the not-found page for others.
    let page = format!("/recordings/{id}");
    for api in [&w.patient_api, &w.clinician_api] {
        let (status, html) = api.get("/recordings").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.as_str().unwrap().contains(&page));
        let (status, html) = api.get(&page).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        let html = html.as_str().unwrap();
        assert_eq!(
            html.matches("<video controls").count(),
            2,
            "a player each: {html}"
        );
        assert!(html.contains("/static/recording.js"), "{html}");
    }
    for api in [
        &w.stranger_api,
        &w.colleague_api,
        &w.other_clinician_api,
        &w.admin_api,
    ] {
        assert_eq!(api.get(&page).await.0, StatusCode::NOT_FOUND);
        let (_, html) = api.get("/recordings").await;
        assert!(!html.to_string().contains(&id));
    }
    let response = anonymous.http.get(app.url(&page)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    // Break-glass: only a colleague at the practice, only with a reason, only for an hour.
    let glass = format!("{entry}/break-glass");
    let reason = "Patient readmitted with chest pain; need to hear the advice given.";
    for (who, api) in [
        ("the patient", &w.patient_api),
        ("the call's own clinician", &w.clinician_api),
        ("a clinician of another practice", &w.other_clinician_api),
        ("the practice admin", &w.admin_api),
    ] {
        let (status, body) = api.post(&glass, json!({"reason": reason})).await;
        assert_eq!(
            (status, body),
            (StatusCode::NOT_FOUND, not_found_body()),
            "break-glass by {who}"
        );
    }
    let (status, body) = w.colleague_api.post(&glass, json!({"reason": "need it"})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_reason"))
    );
    assert_eq!(w.colleague_api.get(&entry).await.0, StatusCode::NOT_FOUND);
    let (status, body) = w.colleague_api.post(&glass, json!({"reason": reason})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(w.colleague_api.get(&entry).await.0, StatusCode::OK);
    let (status, body, url) = ticket(&app, &w.colleague_api, &id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, head) = ranged(&w.colleague_api, &url, Some("bytes=0-3")).await;
    assert_eq!(
        (status, head.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &EBML_MAGIC[..])
    );
    // On PostgreSQL, the grant (which names the patient and the reason) is visible in no one's scope but
    // theirs and their practice's.
    let store = &app.running.state.store;
    if store.backend() == confide_store::Backend::Postgres {
        let unscoped = store
            .unscoped_count(confide_store::UnscopedTable::RecordingBreakGlass)
            .await
            .unwrap();
        assert_eq!(
            unscoped, 0,
            "row-level security hides break-glass grants outside a grant's scope"
        );
    }
    let opened = log_entries(&w, &w.colleague, "recording.break_glass.opened").await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["reason"], reason, "the patient sees the reason");
    let (_, page) = w.patient_api.get("/access-log").await;
    assert!(
        page.as_str().unwrap().contains(reason),
        "the access log page shows the reason"
    );
    assert!(!log_entries(&w, &w.colleague, "recording.play").await.is_empty());
    app.clock.advance(Duration::from_secs(61 * 60));
    assert_eq!(
        w.colleague_api.get(&entry).await.0,
        StatusCode::NOT_FOUND,
        "the glass closes"
    );
    let (status, _, _) = ranged(&w.colleague_api, &url, Some("bytes=0-3")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "and the ticket with it");

    // The practice turns replay off: participants are told so, everyone else still gets 404, the
    // recording's entry stays readable; on again, it plays.
    let replay = format!("/api/v1/practices/{}/replay", w.practice);
    for api in [&w.clinician_api, &w.patient_api, &w.other_clinician_api] {
        let (status, body) = api.put(&replay, json!({"enabled": false})).await;
        assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found_body()));
    }
    let (status, body) = w.admin_api.put(&replay, json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for api in [&w.patient_api, &w.clinician_api] {
        let (status, body) = api.get(&media).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::CONFLICT, &json!("replay_disabled"))
        );
        let (status, body) = api.post(&format!("{entry}/playback"), json!({})).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::CONFLICT, &json!("replay_disabled"))
        );
        assert_eq!(api.get(&entry).await.0, StatusCode::OK);
    }
    let (status, body) = w.stranger_api.get(&media).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found_body()));
    let (status, body) = w.admin_api.put(&replay, json!({"enabled": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        ranged(&w.patient_api, &app.url(&media), Some("bytes=0-3"))
            .await
            .0,
        StatusCode::PARTIAL_CONTENT
    );

    // A tampered copy is refused, never played.
    let copy_dir = app.dir.path().join("blobs").join("recordings").join(&id);
    let copy = copy_dir.join(format!("{id}.webm.enc"));
    let original = std::fs::read(&copy).unwrap();
    let mut altered = original.clone();
    altered[20] ^= 0x01;
    std::fs::write(&copy, &altered).unwrap();
    let (status, _, body) = ranged(&w.patient_api, &app.url(&media), Some("bytes=0-3")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !body.starts_with(&EBML_MAGIC),
        "nothing of the altered block is served"
    );
    std::fs::write(&copy, &original).unwrap();

    // Retention: the practice admin sets 30 days; 31 days on, the keys go first, then the files.
    let retention = format!("/api/v1/practices/{}/recording-retention", w.practice);
    let (status, body) = w.clinician_api.put(&retention, json!({"days": 30})).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found_body()));
    let (status, body) = w.admin_api.put(&retention, json!({"days": 0})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_retention"))
    );
    let (status, body) = w.admin_api.put(&retention, json!({"days": 30})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let segments = app.dir.path().join("recordings").join(&id);
    let blobs = app.dir.path().join("blobs").join("recordings").join(&id);
    assert!(segments.exists() && blobs.exists());
    // The job runner may take its turn too; what matters is what is left afterwards.
    app.running.state.run_recording_jobs().await.unwrap();
    assert!(segments.exists() && blobs.exists(), "not yet");
    assert_eq!(w.patient_api.get(&entry).await.1["status"], "ready");
    app.clock.advance(Duration::from_secs(31 * 24 * 3600));
    app.running.state.run_recording_jobs().await.unwrap();
    assert!(!segments.exists(), "the segment files are gone");
    assert_eq!(
        std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0),
        0,
        "the playback copy is gone"
    );
    // A month on, everyone logs in again.
    let now_secs = (app.clock.now_ms() / 1000) as u64;
    for who in [&w.patient, &w.clinician] {
        let api = login_at(app.running.url(), now_secs, who).await;
        let (status, body) = api.get(&entry).await;
        assert_eq!(
            (status, &body["status"]),
            (StatusCode::OK, &json!("expired")),
            "{body}"
        );
        for path in [&media, &patient_media] {
            let (status, body) = api.get(path).await;
            assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found_body()));
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn recordings_play_back_for_their_participants_only_on_sqlite() {
    recordings_end_to_end(None).await;
}

#[tokio::test]
async fn recordings_play_back_for_their_participants_only_on_postgres() {
    if let Some(db) = TestDatabase::postgres().await {
        recordings_end_to_end(Some(db)).await;
    }
}

/// The global switch: with `replay_enabled = false` nothing plays; those who may not see the recording
/// still get 404.
#[tokio::test]
async fn the_global_switch_turns_replay_off_everywhere() {
    let app = TestApp::spawn().await;
    let w = recorded_call(&app, 1).await;
    wait_until_ready(&w.patient_api, &w.recording).await;
    let TestApp {
        running, clock, dir, ..
    } = app;
    running.stop().await.unwrap();
    clock.advance(Duration::from_secs(60));
    let mut config = ServerConfig::embedded(dir.path().to_owned(), "127.0.0.1:0".parse().unwrap());
    config.replay_enabled = false;
    let running = confide_server::spawn(config, clock.clone()).await.unwrap();
    let now_secs = (clock.now_ms() / 1000) as u64;
    let patient_api = login_at(running.url(), now_secs, &w.patient).await;
    let colleague_api = login_at(running.url(), now_secs, &w.colleague).await;
    let media = format!("/api/v1/recordings/{}/media", w.recording);
    let (status, body) = patient_api.get(&media).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::CONFLICT, &json!("replay_disabled"))
    );
    let (status, body) = colleague_api.get(&media).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found_body()));
    let (status, body) = patient_api
        .get(&format!("/api/v1/recordings/{}", w.recording))
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("ready")),
        "the entry stays readable"
    );
    running.stop().await.unwrap();
}

/// An S3 server in this process (s3s over a directory), serving until the test ends.
async fn s3_server(root: &std::path::Path) -> std::net::SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single("test-key", "test-secret"));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(conn);
        }
    });
    addr
}

/// Playback copies in S3: the remux uploads there, ranges are read from there, and the local disk
/// holds no copy.
#[tokio::test]
async fn playback_copies_live_in_s3_when_configured() {
    let s3_root = tempfile::tempdir().unwrap();
    std::fs::create_dir(s3_root.path().join("confide-recordings")).unwrap();
    let addr = s3_server(s3_root.path()).await;
    let app = TestApp::spawn_with(None, |config| {
        config.blob_store = confide_server::config::BlobStoreConfig::S3(confide_server::config::S3Config {
            bucket: "confide-recordings".to_owned(),
            endpoint: Some(format!("http://{addr}")),
            region: "us-east-1".to_owned(),
            access_key_id: Some("test-key".to_owned()),
            secret_access_key: Some("test-secret".to_owned()),
        });
    })
    .await;
    let w = recorded_call(&app, 1).await;
    wait_until_ready(&w.patient_api, &w.recording).await;
    let (status, body, url) = ticket(&app, &w.patient_api, &w.recording).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, head) = ranged(&w.patient_api, &url, Some("bytes=0-3")).await;
    assert_eq!(
        (status, head.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &EBML_MAGIC[..])
    );
    let (status, _, all) = ranged(&w.patient_api, &url, None).await;
    assert_eq!(status, StatusCode::OK);
    let stored = s3_root
        .path()
        .join("confide-recordings")
        .join("recordings")
        .join(&w.recording);
    let objects: Vec<_> = std::fs::read_dir(&stored)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".webm.enc"))
        .collect();
    let mut names: Vec<String> = objects
        .iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_unstable();
    let mut expected: Vec<String> = [
        &w.recording,
        &w.patient.id.to_string(),
        &w.clinician.id.to_string(),
    ]
    .iter()
    .map(|name| format!("{name}.webm.enc"))
    .collect();
    expected.sort_unstable();
    assert_eq!(
        names, expected,
        "the recording's copy and one per participant, once each"
    );
    let object = std::fs::read(stored.join(format!("{}.webm.enc", w.recording))).unwrap();
    assert!(object.len() > all.len(), "stored with nonces and tags");
    assert!(
        !object.windows(64).any(|w| w == &all[..64]),
        "the stored copy is encrypted"
    );
    assert!(!app.dir.path().join("blobs").join("recordings").exists());
    app.stop().await;
}
