//! A UDP path between the browsers and the SFU that a test can cut, as a dropped network would. Each
//! browser address gets its own socket towards the SFU, as behind a NAT. While cut, nothing gets through
//! either way. Once restored, the addresses used before the cut stay cut off, as after a phone moved from
//! Wi-Fi to mobile data; a new connection, which a browser makes from new ports, gets through.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

pub struct NetworkPath {
    public: SocketAddr,
    state: Arc<State>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Whether the path is cut now, and how many cuts it has had: a browser address carries on only while
/// the path is up and it has had no cut since the address was first seen.
#[derive(Default)]
struct State {
    down: AtomicBool,
    cuts: AtomicU64,
}

impl State {
    fn stops(&self, seen_after_cuts: u64) -> bool {
        self.down.load(Ordering::SeqCst) || self.cuts.load(Ordering::SeqCst) != seen_after_cuts
    }
}

impl NetworkPath {
    /// A path for an SFU with `workers` workers, and the address its first worker is to bind: the
    /// SFU announces the path's ports, worker `i` the `i`th after the first, and the path carries what
    /// arrives on each to the worker bound to the port as far after the SFU's first.
    pub fn open(workers: usize) -> (NetworkPath, SocketAddr) {
        // Held until the path has its own ports, so that it cannot take the SFU's.
        let reserved = consecutive_ports(workers);
        let listeners = consecutive_ports(workers);
        let sfu_first = reserved[0].local_addr().unwrap();
        drop(reserved);
        let path = NetworkPath {
            public: listeners[0].local_addr().unwrap(),
            state: Arc::default(),
            tasks: Arc::default(),
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            listener.set_nonblocking(true).unwrap();
            let listener = Arc::new(UdpSocket::from_std(listener).unwrap());
            let sfu = SocketAddr::new(sfu_first.ip(), sfu_first.port() + i as u16);
            let task = tokio::spawn(carry(listener, sfu, path.state.clone(), path.tasks.clone()));
            path.tasks.lock().unwrap().push(task);
        }
        (path, sfu_first)
    }

    /// The address browsers are to be told, for the SFU's first worker.
    pub fn public_addr(&self) -> SocketAddr {
        self.public
    }

    /// Drops everything, until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        self.state.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// Lets new browser addresses through again.
    pub fn restore(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for NetworkPath {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Carries datagrams from browsers on `listener` to `sfu`, each browser through a socket of its own, and
/// the SFU's answers back.
async fn carry(
    listener: Arc<UdpSocket>,
    sfu: SocketAddr,
    state: Arc<State>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut upstream: HashMap<SocketAddr, (Arc<UdpSocket>, u64)> = HashMap::new();
    let mut buf = vec![0; 65_536];
    while let Ok((n, browser)) = listener.recv_from(&mut buf).await {
        let (socket, seen_after_cuts) = match upstream.get(&browser) {
            Some(known) => known.clone(),
            None => {
                let cuts = state.cuts.load(Ordering::SeqCst);
                if state.stops(cuts) {
                    continue;
                }
                let socket = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap());
                socket.connect(sfu).await.unwrap();
                let back = tokio::spawn(answers(
                    socket.clone(),
                    listener.clone(),
                    browser,
                    state.clone(),
                    cuts,
                ));
                tasks.lock().unwrap().push(back);
                upstream.insert(browser, (socket.clone(), cuts));
                (socket, cuts)
            }
        };
        if state.stops(seen_after_cuts) {
            continue;
        }
        // Loopback drops nothing it takes; a refused send is a drop on the path.
        let _ = socket.send(&buf[..n]).await;
    }
}

/// Carries what the SFU sends `browser` back to it from the port it sent to, while the path lets it.
async fn answers(
    socket: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    browser: SocketAddr,
    state: Arc<State>,
    seen_after_cuts: u64,
) {
    let mut buf = vec![0; 65_536];
    while let Ok(n) = socket.recv(&mut buf).await {
        if state.stops(seen_after_cuts) {
            continue;
        }
        let _ = listener.send_to(&buf[..n], browser).await;
    }
}

/// `n` UDP sockets bound to consecutive ports on 127.0.0.1.
fn consecutive_ports(n: usize) -> Vec<StdUdpSocket> {
    loop {
        let first = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut sockets = vec![first];
        for i in 1..n {
            let Some(next) = port.checked_add(i as u16) else {
                break;
            };
            match StdUdpSocket::bind((Ipv4Addr::LOCALHOST, next)) {
                Ok(socket) => sockets.push(socket),
                Err(_) => break,
            }
        }
        if sockets.len() == n {
            return sockets;
        }
    }
}
