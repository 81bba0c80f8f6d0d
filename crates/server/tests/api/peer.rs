//! The shared test peer (confide-testpeer) in a browser's place, signaling through the API.

use std::ops::{Deref, DerefMut};

pub use confide_testpeer::{Marker, Peers, numbers};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::Client;

pub struct Peer(confide_testpeer::Peer);

impl Peer {
    pub async fn new(label: &str) -> Peer {
        Peer(confide_testpeer::Peer::new(label).await)
    }

    /// A new peer labelled `label` that joins the call at `path` as `client`, with video; panics
    /// unless the API lets it in.
    pub async fn join(client: &Client, path: &str, label: &str) -> Peer {
        let mut peer = Peer::new(label).await;
        let offer = peer.offer(true);
        let (status, body) = peer.signal(client, path, offer, "video").await;
        assert_eq!(status, StatusCode::OK, "{label} joins: {body}");
        peer
    }

    /// Posts `offer` to `path` as `client`, as someone who agrees to be recorded; on 200, takes the
    /// answer. Returns what the API said.
    pub async fn signal(
        &mut self,
        client: &Client,
        path: &str,
        offer: String,
        mode: &str,
    ) -> (StatusCode, Value) {
        let (status, body) = client
            .post(path, json!({"sdp": offer, "mode": mode, "consent": "given"}))
            .await;
        if status == StatusCode::OK {
            self.accept(body["sdp"].as_str().expect("an answer"));
        } else {
            self.refused();
        }
        (status, body)
    }
}

impl Deref for Peer {
    type Target = confide_testpeer::Peer;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Peer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
