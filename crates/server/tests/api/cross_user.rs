//! Every API endpoint, called as every principal in generated worlds of practices, staff, patients,
//! registrations and transfers. The expected answer comes from an oracle written from the policy's words,
//! independently of the access gate; any unexpected 2xx, or a 2xx that carries someone else's data, fails.
//! Every new endpoint joins [`ENDPOINTS`] and [`expect`].

use std::collections::{BTreeSet, HashMap};

use confide_domain::identity::Role;
use confide_domain::{PracticeId, UserId};
use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Client, Seeded, TestApp, not_found_body};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    None,
    Patient,
    Practice,
    Registration,
    /// A practice named in the JSON body rather than the path.
    PracticeInBody,
}

#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub target: Target,
}

const fn ep(method: &'static str, path: &'static str, target: Target) -> Endpoint {
    Endpoint { method, path, target }
}

pub const ENDPOINTS: &[Endpoint] = &[
    ep("GET", "/api/v1/me", Target::None),
    ep("GET", "/api/v1/practices", Target::None),
    ep("POST", "/api/v1/practices", Target::None),
    ep("GET", "/api/v1/practices/{id}", Target::Practice),
    ep(
        "GET",
        "/api/v1/practices/{id}/registration-requests",
        Target::Practice,
    ),
    ep("GET", "/api/v1/practices/{id}/patients", Target::Practice),
    ep("POST", "/api/v1/practices/{id}/invites", Target::Practice),
    ep("GET", "/api/v1/registrations", Target::None),
    ep("POST", "/api/v1/registrations", Target::PracticeInBody),
    ep("POST", "/api/v1/registrations/{id}/accept", Target::Registration),
    ep("POST", "/api/v1/registrations/{id}/decline", Target::Registration),
    ep("GET", "/api/v1/patients/{id}", Target::Patient),
    ep("GET", "/api/v1/patients/{id}/record", Target::Patient),
    ep("POST", "/api/v1/patients/{id}/notes", Target::Patient),
    ep("GET", "/api/v1/patients/{id}/access-log", Target::Patient),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pending,
    Accepted,
    Declined,
    Withdrawn,
    Ended,
}

#[derive(Clone, Debug)]
struct Reg {
    id: Uuid,
    patient: UserId,
    practice: PracticeId,
    status: Status,
}

/// What the test believes the world is, kept up to date as calls change it.
#[derive(Default)]
struct Model {
    practices: Vec<PracticeId>,
    names: HashMap<UserId, String>,
    regs: Vec<Reg>,
    notes: HashMap<UserId, BTreeSet<String>>,
}

impl Model {
    fn registered_at(&self, patient: UserId) -> Option<PracticeId> {
        self.regs
            .iter()
            .find(|r| r.patient == patient && r.status == Status::Accepted)
            .map(|r| r.practice)
    }

    fn live(&self, patient: UserId, practice: PracticeId) -> bool {
        self.regs.iter().any(|r| {
            r.patient == patient
                && r.practice == practice
                && matches!(r.status, Status::Pending | Status::Accepted)
        })
    }

    fn accept(&mut self, id: Uuid) {
        let Some(patient) = self.regs.iter().find(|r| r.id == id).map(|r| r.patient) else {
            return;
        };
        for r in self.regs.iter_mut().filter(|r| r.patient == patient) {
            r.status = match (r.id == id, r.status) {
                (true, _) => Status::Accepted,
                (false, Status::Accepted) => Status::Ended,
                (false, Status::Pending) => Status::Withdrawn,
                (false, other) => other,
            };
        }
    }
}

struct Person {
    seeded: Seeded,
    client: Client,
    /// Staff who logged in without a second factor: the gate must refuse them everything.
    mfa: bool,
}

/// The oracle: which status a call should get.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Ok,
    Created,
    Accepted,
    /// Allowed, but the data refuses the change.
    Conflict,
    NotFound,
    LoginRequired,
}

fn expect(model: &Model, who: Option<&Person>, endpoint: &Endpoint, target: Option<Uuid>) -> Expect {
    use Expect::*;
    let public =
        matches!(endpoint.path, "/api/v1/practices" | "/api/v1/practices/{id}") && endpoint.method == "GET";
    let practice_exists = |id: Uuid| model.practices.contains(&PracticeId::from_uuid(id));
    if public {
        return match target {
            Some(id) if !practice_exists(id) => NotFound,
            _ => Ok,
        };
    }
    let Some(who) = who else { return LoginRequired };
    let role = who.seeded.role;
    let me = who.seeded.id;
    let works_at = |p: PracticeId| who.seeded.practice == Some(p) && who.mfa;
    let is_patient = role == Role::Patient;
    let allowed = |yes: bool, ok: Expect| if yes { ok } else { NotFound };
    match (endpoint.method, endpoint.path) {
        ("GET", "/api/v1/me") => Ok,
        ("POST", "/api/v1/practices") => allowed(role == Role::PlatformAdmin && who.mfa, Created),
        ("GET", "/api/v1/registrations") => allowed(is_patient, Ok),
        _ => {
            let id = target.expect("a target");
            match endpoint.target {
                Target::Practice | Target::PracticeInBody => {
                    let p = PracticeId::from_uuid(id);
                    if !practice_exists(id) {
                        return NotFound;
                    }
                    match endpoint.path {
                        "/api/v1/practices/{id}/registration-requests" => allowed(
                            matches!(role, Role::Clinician | Role::PracticeAdmin) && works_at(p),
                            Ok,
                        ),
                        "/api/v1/practices/{id}/patients" => {
                            allowed(role == Role::Clinician && works_at(p), Ok)
                        }
                        "/api/v1/practices/{id}/invites" => allowed(
                            (role == Role::PracticeAdmin && works_at(p))
                                || (role == Role::PlatformAdmin && who.mfa),
                            Accepted,
                        ),
                        "/api/v1/registrations" if is_patient => {
                            if model.live(me, p) {
                                Conflict
                            } else {
                                Created
                            }
                        }
                        _ => NotFound,
                    }
                }
                Target::Registration => match model.regs.iter().find(|r| r.id == id) {
                    Some(r)
                        if matches!(role, Role::Clinician | Role::PracticeAdmin) && works_at(r.practice) =>
                    {
                        if r.status == Status::Pending {
                            Ok
                        } else {
                            Conflict
                        }
                    }
                    _ => NotFound,
                },
                Target::Patient => {
                    let patient = UserId::from_uuid(id);
                    if !model.names.contains_key(&patient) {
                        return NotFound;
                    }
                    let own = is_patient && me == patient;
                    let their_clinician =
                        role == Role::Clinician && model.registered_at(patient).is_some_and(works_at);
                    match endpoint.path {
                        "/api/v1/patients/{id}" | "/api/v1/patients/{id}/record" => {
                            allowed(own || their_clinician, Ok)
                        }
                        "/api/v1/patients/{id}/notes" => allowed(their_clinician, Created),
                        "/api/v1/patients/{id}/access-log" => allowed(own, Ok),
                        _ => NotFound,
                    }
                }
                Target::None => NotFound,
            }
        }
    }
}

fn status_of(e: &Expect) -> StatusCode {
    match e {
        Expect::Ok => StatusCode::OK,
        Expect::Created => StatusCode::CREATED,
        Expect::Accepted => StatusCode::ACCEPTED,
        Expect::Conflict => StatusCode::CONFLICT,
        Expect::NotFound => StatusCode::NOT_FOUND,
        Expect::LoginRequired => StatusCode::UNAUTHORIZED,
    }
}

fn ids(body: &Value, field: &str) -> BTreeSet<String> {
    body.as_array()
        .unwrap()
        .iter()
        .map(|v| v[field].as_str().unwrap().to_owned())
        .collect()
}

/// Checks that a successful answer carries only what the caller may see, and updates the model.
fn check_and_apply(model: &mut Model, who: &Person, endpoint: &Endpoint, target: Option<Uuid>, body: &Value) {
    let me = who.seeded.id;
    let target_str = target.map(|t| t.to_string()).unwrap_or_default();
    match (endpoint.method, endpoint.path) {
        ("GET", "/api/v1/me") => assert_eq!(body["id"], me.to_string()),
        ("GET", "/api/v1/patients/{id}") => {
            assert_eq!(body["id"], target_str);
            assert_eq!(
                body["name"].as_str(),
                model
                    .names
                    .get(&UserId::from_uuid(target.unwrap()))
                    .map(String::as_str)
            );
        }
        ("GET", "/api/v1/patients/{id}/record") => {
            assert_eq!(body["patient_id"], target_str);
            let expected = model
                .notes
                .get(&UserId::from_uuid(target.unwrap()))
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                ids(&body["notes"], "id"),
                expected,
                "the record holds exactly this patient's notes"
            );
        }
        ("POST", "/api/v1/patients/{id}/notes") => {
            let id = body["id"].as_str().unwrap().to_owned();
            model
                .notes
                .entry(UserId::from_uuid(target.unwrap()))
                .or_default()
                .insert(id);
        }
        ("GET", "/api/v1/patients/{id}/access-log") => {
            assert!(
                body.as_array()
                    .unwrap()
                    .iter()
                    .all(|e| e["actor_id"] != target_str)
            );
        }
        ("GET", "/api/v1/practices/{id}/registration-requests") => {
            let p = PracticeId::from_uuid(target.unwrap());
            let expected: BTreeSet<String> = model
                .regs
                .iter()
                .filter(|r| r.practice == p && r.status == Status::Pending)
                .map(|r| r.id.to_string())
                .collect();
            assert_eq!(ids(body, "registration_id"), expected);
        }
        ("GET", "/api/v1/practices/{id}/patients") => {
            let p = PracticeId::from_uuid(target.unwrap());
            let expected: BTreeSet<String> = model
                .regs
                .iter()
                .filter(|r| r.practice == p && r.status == Status::Accepted)
                .map(|r| r.patient.to_string())
                .collect();
            assert_eq!(ids(body, "id"), expected);
        }
        ("GET", "/api/v1/registrations") => {
            let expected: BTreeSet<String> = model
                .regs
                .iter()
                .filter(|r| r.patient == me)
                .map(|r| r.id.to_string())
                .collect();
            assert_eq!(ids(body, "id"), expected);
        }
        ("POST", "/api/v1/registrations") => model.regs.push(Reg {
            id: body["id"].as_str().unwrap().parse().unwrap(),
            patient: me,
            practice: PracticeId::from_uuid(target.unwrap()),
            status: Status::Pending,
        }),
        ("POST", "/api/v1/registrations/{id}/accept") => model.accept(target.unwrap()),
        ("POST", "/api/v1/registrations/{id}/decline") => {
            if let Some(r) = model.regs.iter_mut().find(|r| Some(r.id) == target) {
                r.status = Status::Declined;
            }
        }
        ("POST", "/api/v1/practices") => model.practices.push(
            body["id"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .map(PracticeId::from_uuid)
                .unwrap(),
        ),
        _ => {}
    }
}

async fn call(client: &Client, endpoint: &Endpoint, target: Option<Uuid>, n: usize) -> (StatusCode, Value) {
    let path = match (endpoint.target, target) {
        (Target::PracticeInBody | Target::None, _) | (_, None) => endpoint.path.to_owned(),
        (_, Some(id)) => endpoint.path.replace("{id}", &id.to_string()),
    };
    if endpoint.method == "GET" {
        return client.get(&path).await;
    }
    let body = match endpoint.path {
        "/api/v1/practices" => {
            json!({"name": format!("Practice {n}"), "address": "2 Side Street", "time_zone": "Europe/London"})
        }
        "/api/v1/practices/{id}/invites" => {
            json!({"email": format!("invitee-{n}@example.org"), "name": "New Colleague", "role": "clinician"})
        }
        "/api/v1/registrations" => json!({"practice_id": target}),
        "/api/v1/patients/{id}/notes" => json!({"body": format!("note {n}")}),
        _ => json!({}),
    };
    client.post(&path, body).await
}

#[derive(Clone, Copy, Debug)]
enum Decision {
    Accept,
    Decline,
    Leave,
}

#[derive(Clone, Debug)]
struct WorldSpec {
    practices: usize,
    /// Extra staff beyond one clinician per practice: (practice, is admin).
    extra_staff: Vec<(usize, bool)>,
    /// Per patient, the requests they make in order, and what the practice does with each.
    histories: Vec<Vec<(usize, Decision)>>,
}

fn world() -> impl Strategy<Value = WorldSpec> {
    (2usize..=3).prop_flat_map(|n| {
        let decision = prop_oneof![
            Just(Decision::Accept),
            Just(Decision::Decline),
            Just(Decision::Leave)
        ];
        (
            Just(n),
            prop::collection::vec((0..n, any::<bool>()), 0..=2),
            prop::collection::vec(prop::collection::vec((0..n, decision), 0..=3), 2..=4),
        )
            .prop_map(|(practices, extra_staff, histories)| WorldSpec {
                practices,
                extra_staff,
                histories,
            })
    })
}

async fn person(app: &TestApp, role: Role, practice: Option<PracticeId>, mfa: bool) -> Person {
    let seeded = app.user(role, practice, mfa).await;
    let client = app.login(&seeded).await;
    Person {
        seeded,
        client,
        mfa: mfa || role == Role::Patient,
    }
}

async fn run_world(spec: WorldSpec, db: Option<confide_store::testing::TestDatabase>) {
    let app = TestApp::spawn_with(db, |_| {}).await;
    let mut model = Model::default();
    for i in 0..spec.practices {
        model.practices.push(app.practice(&format!("Practice {i}")).await);
    }
    let mut people = vec![person(&app, Role::PlatformAdmin, None, true).await];
    for p in &model.practices {
        people.push(person(&app, Role::Clinician, Some(*p), true).await);
    }
    people.push(person(&app, Role::Clinician, Some(model.practices[0]), false).await);
    for (i, admin) in &spec.extra_staff {
        let role = if *admin {
            Role::PracticeAdmin
        } else {
            Role::Clinician
        };
        people.push(person(&app, role, Some(model.practices[*i]), true).await);
    }
    let first_patient = people.len();
    for _ in &spec.histories {
        let patient = person(&app, Role::Patient, None, false).await;
        let (_, me) = patient.client.get("/api/v1/me").await;
        model
            .names
            .insert(patient.seeded.id, me["name"].as_str().unwrap().to_owned());
        people.push(patient);
    }
    // Histories go through the API too, checked like every other call.
    let request = &ENDPOINTS
        .iter()
        .find(|e| e.target == Target::PracticeInBody)
        .copied()
        .unwrap();
    let mut n = 0;
    for (k, history) in spec.histories.iter().enumerate() {
        let patient = &people[first_patient + k];
        for (practice, decision) in history {
            let practice = model.practices[*practice];
            n += 1;
            let (status, body) = call(&patient.client, request, Some(practice.as_uuid()), n).await;
            if status != StatusCode::CREATED {
                continue;
            }
            check_and_apply(&mut model, patient, request, Some(practice.as_uuid()), &body);
            let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
            let gp = &people[1 + model.practices.iter().position(|p| *p == practice).unwrap()];
            let path = match decision {
                Decision::Accept => "/api/v1/registrations/{id}/accept",
                Decision::Decline => "/api/v1/registrations/{id}/decline",
                Decision::Leave => continue,
            };
            let endpoint = ENDPOINTS.iter().find(|e| e.path == path).unwrap();
            let (status, body) = call(&gp.client, endpoint, Some(id), n).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            check_and_apply(&mut model, gp, endpoint, Some(id), &body);
        }
    }
    // A registered patient's clinician writes in their record, so records have something to leak.
    for k in 0..spec.histories.len() {
        let patient = people[first_patient + k].seeded.id;
        if let Some(p) = model.registered_at(patient) {
            let gp = &people[1 + model.practices.iter().position(|x| *x == p).unwrap()];
            let endpoint = ENDPOINTS
                .iter()
                .find(|e| e.path == "/api/v1/patients/{id}/notes")
                .unwrap();
            n += 1;
            let (status, body) = call(&gp.client, endpoint, Some(patient.as_uuid()), n).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            check_and_apply(&mut model, gp, endpoint, Some(patient.as_uuid()), &body);
        }
    }

    let unknown = Uuid::new_v4();
    let anonymous = app.anonymous();
    // Reads first, then writes, so that every principal also reads the world before it changes.
    let order: Vec<&Endpoint> = ENDPOINTS
        .iter()
        .filter(|e| e.method == "GET")
        .chain(ENDPOINTS.iter().filter(|e| e.method != "GET"))
        .collect();
    for endpoint in order {
        let targets: Vec<Option<Uuid>> = match endpoint.target {
            Target::None => vec![None],
            Target::Practice | Target::PracticeInBody => model
                .practices
                .iter()
                .map(|p| Some(p.as_uuid()))
                .chain([Some(unknown)])
                .collect(),
            Target::Registration => model
                .regs
                .iter()
                .map(|r| Some(r.id))
                .chain([Some(unknown)])
                .collect(),
            Target::Patient => people
                .iter()
                .map(|p| Some(p.seeded.id.as_uuid()))
                .chain([Some(unknown)])
                .collect(),
        };
        for target in targets {
            for who in people.iter().map(Some).chain([None]) {
                n += 1;
                let expected = expect(&model, who, endpoint, target);
                let client = who.map_or(&anonymous, |p| &p.client);
                let (status, body) = call(client, endpoint, target, n).await;
                let label = format!(
                    "{} {} target={target:?} as {:?}: expected {expected:?}, got {status} {body}",
                    endpoint.method,
                    endpoint.path,
                    who.map(|p| (p.seeded.role, p.mfa)),
                );
                assert_eq!(status, status_of(&expected), "{label}");
                match expected {
                    Expect::NotFound => assert_eq!(body, not_found_body(), "{label}"),
                    Expect::LoginRequired => assert_eq!(body["error"]["code"], "login_required", "{label}"),
                    Expect::Ok | Expect::Created | Expect::Accepted => {
                        if let Some(who) = who {
                            check_and_apply(&mut model, who, endpoint, target, &body);
                        }
                    }
                    Expect::Conflict => {}
                }
            }
        }
    }
    app.stop().await;
}

fn run_on_runtime(spec: WorldSpec, postgres: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let db = if postgres {
            confide_store::testing::TestDatabase::postgres().await
        } else {
            None
        };
        if postgres && db.is_none() {
            return;
        }
        run_world(spec, db).await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 8, ..ProptestConfig::default() })]

    #[test]
    fn no_one_sees_what_the_policy_does_not_give_them(spec in world()) {
        run_on_runtime(spec, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2, max_shrink_iters: 4, ..ProptestConfig::default() })]

    #[test]
    fn no_one_sees_what_the_policy_does_not_give_them_on_postgres(spec in world()) {
        run_on_runtime(spec, true);
    }
}

/// The web pages, as every kind of principal: each answers by role, and none shows another patient's
/// name or notes unless the policy gives them to the viewer.
#[tokio::test]
async fn pages_show_each_person_only_what_the_policy_gives_them() {
    let app = TestApp::spawn().await;
    let (north, south) = (
        app.practice("North Surgery").await,
        app.practice("South Surgery").await,
    );
    let gp = person(&app, Role::Clinician, Some(north), true).await;
    let gp_south = person(&app, Role::Clinician, Some(south), true).await;
    let admin = person(&app, Role::PracticeAdmin, Some(north), true).await;
    let platform = person(&app, Role::PlatformAdmin, None, true).await;
    let unenrolled = person(&app, Role::Clinician, Some(north), false).await;
    let ann = person(&app, Role::Patient, None, false).await;
    let bob = person(&app, Role::Patient, None, false).await;
    let cat = person(&app, Role::Patient, None, false).await;
    crate::helpers::register(&ann.client, &gp.client, north).await;
    crate::helpers::register(&bob.client, &gp_south.client, south).await;
    let (_, pending) = cat
        .client
        .post("/api/v1/registrations", json!({"practice_id": north}))
        .await;
    for (patient, writer, text) in [
        (&ann, &gp, "ann-private-note"),
        (&bob, &gp_south, "bob-private-note"),
    ] {
        let path = format!("/api/v1/patients/{}/notes", patient.seeded.id);
        assert_eq!(
            writer.client.post(&path, json!({"body": text})).await.0,
            StatusCode::CREATED
        );
    }
    let mut names = Vec::new();
    for p in [&ann, &bob, &cat] {
        names.push(
            p.client.get("/api/v1/me").await.1["name"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let (ann_name, bob_name, cat_name) = (&names[0], &names[1], &names[2]);
    let secrets = [
        ("ann", ann_name.as_str()),
        ("ann", "ann-private-note"),
        ("bob", bob_name.as_str()),
        ("bob", "bob-private-note"),
        ("cat", cat_name.as_str()),
    ];

    // (who, what they may see, page → expected status)
    let cases: Vec<(&str, &Person, &[&str], [u16; 4])> = vec![
        // pages: /home, /record, /access-log, /practice/queue
        ("ann", &ann, &["ann"], [200, 200, 200, 404]),
        ("bob", &bob, &["bob"], [200, 200, 200, 404]),
        ("cat", &cat, &["cat"], [200, 200, 200, 404]),
        ("north clinician", &gp, &["ann", "cat"], [200, 404, 404, 200]),
        ("south clinician", &gp_south, &["bob"], [200, 404, 404, 200]),
        ("north admin", &admin, &["cat"], [200, 404, 404, 200]),
        ("platform admin", &platform, &[], [200, 404, 404, 404]),
        (
            "clinician without a second factor",
            &unenrolled,
            &[],
            [303, 303, 303, 303],
        ),
    ];
    let pages = ["/home", "/record", "/access-log", "/practice/queue"];
    for (label, who, visible, expected) in &cases {
        for (page, status) in pages.iter().zip(expected) {
            let (got, body) = who.client.get(page).await;
            assert_eq!(got.as_u16(), *status, "{page} as {label}: {body}");
            let html = body.as_str().unwrap_or_default();
            for (owner, secret) in secrets {
                if !visible.contains(&owner) {
                    assert!(
                        !html.contains(secret),
                        "{page} as {label} shows {owner}'s {secret:?}"
                    );
                }
            }
        }
    }
    let anonymous = app.anonymous();
    for page in pages {
        let response = anonymous.http.get(app.url(page)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(response.headers()["location"], "/login");
    }

    // Deciding another practice's request through the page form is refused like an unknown one.
    let (_, form) = gp_south.client.get("/practice/queue").await;
    let html = form.as_str().unwrap();
    let start = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = &html[start..start + html[start..].find('"').unwrap()];
    let registration = pending["id"].as_str().unwrap();
    let response = gp_south
        .client
        .http
        .post(app.url("/practice/queue"))
        .form(&[
            ("csrf", csrf),
            ("registration", registration),
            ("decision", "accept"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (_, queue) = admin
        .client
        .get(&format!("/api/v1/practices/{north}/registration-requests"))
        .await;
    assert_eq!(
        queue[0]["registration_id"], registration,
        "the request is still pending"
    );
    app.stop().await;
}
