//! Runs a [`Sfu`] on a UDP socket: one task owns both, takes signaling through an
//! [`SfuHandle`] and hands recorded frames to a channel.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{Participant, ParticipantId, RecordedFrame, RoomId, Sfu, SfuError, Transmit};

/// Largest datagram read; WebRTC keeps well below it (str0m's own bound is 2000).
const MAX_DATAGRAM: usize = 2048;
/// Frames buffered for a recorder that falls behind, about half a minute of a call.
const RECORDED_CAPACITY: usize = 4096;
/// Signaling requests waiting for the SFU task.
const COMMAND_CAPACITY: usize = 64;
/// How long the task sleeps when there is no connection to time.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Datagrams handled before timers and signaling get a look in again.
const RECEIVE_BATCH: usize = 64;
/// Socket buffers for all the calls sharing the one socket: a few milliseconds of every call's
/// media while the task waits for a core, which the defaults (about 200 KiB) are not. The kernel
/// caps them at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Where the UDP socket is bound.
    pub bind: SocketAddr,
    /// What browsers are told to send to; the bound address when `None`. Needed when bound to
    /// 0.0.0.0 or behind NAT.
    pub public_addr: Option<SocketAddr>,
}

impl Default for DriverConfig {
    /// Loopback on any free port: enough for tests and a single-machine demo.
    fn default() -> Self {
        Self {
            bind: (Ipv4Addr::LOCALHOST, 0).into(),
            public_addr: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("binding the SFU's UDP socket")]
    Bind(#[source] io::Error),
    #[error(transparent)]
    Sfu(#[from] SfuError),
    #[error("the SFU task has stopped")]
    Stopped,
}

/// Signaling into the SFU task. Cloneable; the task stops when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct SfuHandle {
    commands: mpsc::Sender<Command>,
    public_addr: SocketAddr,
    recorder_dropped: Arc<AtomicU64>,
    counters: Arc<Counters>,
}

/// Datagrams through the SFU's socket since it started, for metrics and load tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

#[derive(Debug, Default)]
struct Counters {
    datagrams_received: AtomicU64,
    datagrams_sent: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
}

/// The task's counts since it last published them to [`Counters`].
#[derive(Default)]
struct Counts {
    datagrams_received: u64,
    datagrams_sent: u64,
    bytes_received: u64,
    bytes_sent: u64,
}

impl Counters {
    fn add(&self, c: &Counts) {
        self.datagrams_received
            .fetch_add(c.datagrams_received, Ordering::Relaxed);
        self.datagrams_sent.fetch_add(c.datagrams_sent, Ordering::Relaxed);
        self.bytes_received.fetch_add(c.bytes_received, Ordering::Relaxed);
        self.bytes_sent.fetch_add(c.bytes_sent, Ordering::Relaxed);
    }
}

#[derive(Debug)]
enum Command {
    OpenRoom(RoomId, oneshot::Sender<Result<(), SfuError>>),
    CloseRoom(RoomId, oneshot::Sender<bool>),
    Join(
        RoomId,
        Participant,
        String,
        oneshot::Sender<Result<String, SfuError>>,
    ),
    Renegotiate(
        RoomId,
        ParticipantId,
        String,
        oneshot::Sender<Result<String, SfuError>>,
    ),
    Leave(RoomId, ParticipantId, oneshot::Sender<bool>),
}

/// Binds the socket and starts the SFU task on the current Tokio runtime. Returns the handle
/// and the recorder's channel: every frame any participant sends, tagged with room and sender.
pub async fn start(config: DriverConfig) -> Result<(SfuHandle, mpsc::Receiver<RecordedFrame>), DriverError> {
    let socket = UdpSocket::bind(config.bind).await.map_err(DriverError::Bind)?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: smaller buffers only mean losses under bursts.
    if let Err(e) = sock
        .set_recv_buffer_size(SOCKET_BUFFER)
        .and_then(|()| sock.set_send_buffer_size(SOCKET_BUFFER))
    {
        warn!(error = %e, "could not enlarge the SFU socket's buffers");
    }
    let public_addr = match config.public_addr {
        Some(addr) => addr,
        None => socket.local_addr().map_err(DriverError::Bind)?,
    };
    let sfu = Sfu::new(public_addr)?;
    let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (recorded_tx, recorded) = mpsc::channel(RECORDED_CAPACITY);
    let recorder_dropped = Arc::new(AtomicU64::new(0));
    let counters = Arc::new(Counters::default());
    let task = Task {
        socket,
        sfu,
        recorded: recorded_tx,
        recorder_dropped: recorder_dropped.clone(),
        counters: counters.clone(),
        blocked: None,
    };
    tokio::spawn(task.run(command_rx));
    Ok((
        SfuHandle {
            commands,
            public_addr,
            recorder_dropped,
            counters,
        },
        recorded,
    ))
}

impl SfuHandle {
    /// The address announced to browsers.
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// Frames dropped because the recorder's channel was full. The call goes on regardless:
    /// holding back media for a slow recorder would stall both participants.
    pub fn recorder_dropped(&self) -> u64 {
        self.recorder_dropped.load(Ordering::Relaxed)
    }

    /// What has gone through the socket so far.
    pub fn stats(&self) -> DriverStats {
        let c = &self.counters;
        DriverStats {
            datagrams_received: c.datagrams_received.load(Ordering::Relaxed),
            datagrams_sent: c.datagrams_sent.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
        }
    }

    pub async fn open_room(&self, room: RoomId) -> Result<(), DriverError> {
        Ok(self.ask(|reply| Command::OpenRoom(room, reply)).await??)
    }

    pub async fn close_room(&self, room: RoomId) -> Result<bool, DriverError> {
        self.ask(|reply| Command::CloseRoom(room, reply)).await
    }

    /// See [`Sfu::join`]; takes the offer's SDP and returns the answer's.
    pub async fn join(&self, room: RoomId, who: Participant, offer: String) -> Result<String, DriverError> {
        Ok(self.ask(|reply| Command::Join(room, who, offer, reply)).await??)
    }

    /// See [`Sfu::renegotiate`].
    pub async fn renegotiate(
        &self,
        room: RoomId,
        participant: ParticipantId,
        offer: String,
    ) -> Result<String, DriverError> {
        Ok(self
            .ask(|reply| Command::Renegotiate(room, participant, offer, reply))
            .await??)
    }

    pub async fn leave(&self, room: RoomId, participant: ParticipantId) -> Result<bool, DriverError> {
        self.ask(|reply| Command::Leave(room, participant, reply)).await
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, DriverError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| DriverError::Stopped)?;
        answer.await.map_err(|_| DriverError::Stopped)
    }
}

struct Task {
    socket: UdpSocket,
    sfu: Sfu,
    recorded: mpsc::Sender<RecordedFrame>,
    recorder_dropped: Arc<AtomicU64>,
    counters: Arc<Counters>,
    /// A datagram the socket refused for a full buffer, sent before anything after it.
    blocked: Option<Transmit>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0; MAX_DATAGRAM];
        loop {
            self.flush().await;
            let deadline = self
                .sfu
                .next_timeout()
                .unwrap_or_else(|| Instant::now() + IDLE_WAKE);
            tokio::select! {
                readable = self.socket.readable() => match readable {
                    Ok(()) => self.receive_batch(&mut buf),
                    Err(e) => warn!(error = %e, "SFU socket failed"),
                },
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => return,
                },
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
            // On a busy socket the select may pick datagrams over a timer that is also due.
            let now = Instant::now();
            if self.sfu.next_timeout().is_some_and(|t| t <= now) {
                self.sfu.handle_timeout(now);
            }
        }
    }

    /// Handles up to [`RECEIVE_BATCH`] datagrams that are already waiting, sending what each one
    /// yields at once, so that a busy socket costs one wake-up and one timer per batch rather than
    /// per datagram.
    fn receive_batch(&mut self, buf: &mut [u8]) {
        let mut counts = Counts::default();
        for _ in 0..RECEIVE_BATCH {
            match self.socket.try_recv_from(buf) {
                Ok((n, source)) => {
                    counts.datagrams_received += 1;
                    counts.bytes_received += n as u64;
                    self.sfu.handle_datagram(source, &buf[..n], Instant::now());
                    if !self.send_queued(&mut counts) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A UDP read error concerns one datagram (or an ICMP error for one peer).
                Err(e) => warn!(error = %e, "SFU socket read failed"),
            }
        }
        self.counters.add(&counts);
    }

    /// Sends queued datagrams while the socket takes them without waiting; false if it is full, and
    /// the datagram it refused is kept for [`flush`](Self::flush) to wait on.
    fn send_queued(&mut self, counts: &mut Counts) -> bool {
        while let Some(t) = self.blocked.take().or_else(|| self.sfu.poll_transmit()) {
            match self.socket.try_send_to(&t.contents, t.destination) {
                Ok(n) => {
                    counts.datagrams_sent += 1;
                    counts.bytes_sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = Some(t);
                    return false;
                }
                Err(e) => warn!(error = %e, destination = %t.destination, "SFU socket send failed"),
            }
        }
        true
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now();
        // A dropped reply means the asker gave up waiting; the change stands regardless.
        match command {
            Command::OpenRoom(room, reply) => {
                let _ = reply.send(self.sfu.open_room(room, now));
            }
            Command::CloseRoom(room, reply) => {
                let _ = reply.send(self.sfu.close_room(room));
            }
            Command::Join(room, who, offer, reply) => {
                let _ = reply.send(self.sfu.join(room, who, &offer, now));
            }
            Command::Renegotiate(room, participant, offer, reply) => {
                let _ = reply.send(self.sfu.renegotiate(room, participant, &offer, now));
            }
            Command::Leave(room, participant, reply) => {
                let _ = reply.send(self.sfu.leave(room, participant));
            }
        }
    }

    async fn flush(&mut self) {
        let mut counts = Counts::default();
        while !self.send_queued(&mut counts) {
            // The socket's buffer is full: wait for room rather than drop media.
            if let Err(e) = self.socket.writable().await {
                warn!(error = %e, "SFU socket failed");
                self.blocked = None;
            }
        }
        self.counters.add(&counts);
        while let Some(frame) = self.sfu.poll_recorded() {
            match self.recorded.try_send(frame) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if self.recorder_dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                        warn!("the recorder is falling behind; dropping frames");
                    }
                }
                // Nobody records: the call goes on.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}
