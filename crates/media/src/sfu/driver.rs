//! Runs [`Sfu`]s on UDP sockets: rooms are spread over workers, one per core by default, each a
//! thread that owns its own `Sfu` and its own socket, so that a busy SFU uses every core and no
//! socket is shared between workers. Signaling goes through an [`SfuHandle`], which sends it to the
//! worker that owns the room; every worker hands its recorded frames to the one channel.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::socket::{self as sock, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, sockopt};
use quinn_udp::{UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{Participant, ParticipantId, RecordedFrame, RoomId, Sfu, SfuError, Transmit};

/// Datagrams read with one system call (`recvmmsg`), at most. Each has a buffer of
/// [`RECEIVE_BUFFER`] bytes: the kernel may coalesce a burst of equal-sized datagrams from one
/// sender into one buffer (UDP GRO, which quinn-udp turns on), up to 64 KiB.
const RECEIVE_DATAGRAMS: usize = 32;
const RECEIVE_BUFFER: usize = 64 * 1024;
/// The most a datagram sent in segments (UDP GSO) may carry in all.
const MAX_SEGMENTED: usize = 64 * 1024 - 512;
/// Frames buffered for a recorder that falls behind, about half a minute of a call.
const RECORDED_CAPACITY: usize = 4096;
/// Signaling requests waiting for a worker.
const COMMAND_CAPACITY: usize = 64;
/// How long the task sleeps when there is no connection to time.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Recorded frames a worker gathers before handing them over, and how long it holds the first of
/// them at most: the recorder's task is on another thread, and waking it for every frame costs
/// the worker more than forwarding a packet does.
const RECORDED_BATCH: usize = 64;
const RECORDED_DELAY: Duration = Duration::from_millis(20);
/// Reads (of up to [`RECEIVE_DATAGRAMS`] datagrams each) before timers and signaling get a look in
/// again. Packets forwarded meanwhile go out at the end of each read's datagrams, when each
/// receiver's connection runs its timers once for all of them (see `Sfu::handle_datagram`).
const RECEIVE_READS: usize = 2;
/// Socket buffers for all the calls sharing a worker's socket: a few milliseconds of every call's
/// media while the task waits for a core, which the defaults (about 200 KiB) are not. The kernel
/// caps them at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Where the first worker's UDP socket is bound; worker `i` binds the port `i` after it (or
    /// any free port when this one is 0).
    pub bind: SocketAddr,
    /// What browsers are told to send to for the first worker, worker `i` announcing the port `i`
    /// after it; each worker's bound address when `None`. Needed when bound to 0.0.0.0 or behind NAT.
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
    #[error("worker {0}'s port is past the last one")]
    PortRange(usize),
    #[error("starting an SFU worker thread")]
    Spawn(#[source] io::Error),
    #[error(transparent)]
    Sfu(#[from] SfuError),
    #[error("the SFU worker has stopped")]
    Stopped,
}

/// Signaling into the SFU's workers. Cloneable; the workers stop when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct SfuHandle {
    workers: Arc<[Worker]>,
    recorder_dropped: Arc<AtomicU64>,
    counters: Arc<Counters>,
}

/// One worker as the handle sees it: where its commands go and the address its rooms announce.
#[derive(Debug)]
struct Worker {
    commands: mpsc::Sender<Command>,
    public_addr: SocketAddr,
}

/// Datagrams through the SFU's sockets since it started, for metrics and load tests.
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
    delays: ForwardDelays,
}

/// Buckets of [`ForwardDelays`]: 10 µs wide up to 2 ms, then 1 ms wide up to 100 ms, then one for
/// the rest.
const FINE_BUCKETS: u64 = 200;
const FINE_US: u64 = 10;
const COARSE_BUCKETS: u64 = 98;
const COARSE_US: u64 = 1000;
const DELAY_BUCKETS: usize = (FINE_BUCKETS + COARSE_BUCKETS + 1) as usize;

/// How long datagrams spent in the SFU: from reaching its socket (the kernel's receive timestamp) to
/// the end of the send of what they made (the forwarded copies handed to the kernel), counted per
/// bucket of [`delay_bucket`], with their sum in microseconds.
#[derive(Debug)]
struct ForwardDelays {
    buckets: Box<[AtomicU64]>,
    sum_us: AtomicU64,
}

impl Default for ForwardDelays {
    fn default() -> Self {
        ForwardDelays {
            buckets: (0..DELAY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl ForwardDelays {
    fn add(&self, delay: Duration) {
        self.buckets[delay_bucket(delay)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(delay.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

fn delay_bucket(delay: Duration) -> usize {
    let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
    let bucket = if us < FINE_BUCKETS * FINE_US {
        us / FINE_US
    } else {
        (FINE_BUCKETS + (us - FINE_BUCKETS * FINE_US) / COARSE_US).min(FINE_BUCKETS + COARSE_BUCKETS)
    };
    bucket as usize
}

/// The upper edge of a bucket of [`delay_bucket`]; the last has none.
fn bucket_edge(bucket: usize) -> Option<Duration> {
    let b = bucket as u64;
    if b < FINE_BUCKETS {
        Some(Duration::from_micros((b + 1) * FINE_US))
    } else if b < FINE_BUCKETS + COARSE_BUCKETS {
        Some(Duration::from_micros(
            FINE_BUCKETS * FINE_US + (b - FINE_BUCKETS + 1) * COARSE_US,
        ))
    } else {
        None
    }
}

/// A copy of the forwarding delays counted so far; see [`SfuHandle::forward_delays`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelayHistogram {
    counts: Vec<u64>,
    sum_us: u64,
}

impl DelayHistogram {
    /// Datagrams counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The delays counted, added up.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us)
    }

    /// Datagrams counted whose bucket lies wholly within `limit`: all of those that took at most
    /// `limit` when it is a bucket edge (a multiple of 10 µs below 2 ms, of 1 ms below 100 ms).
    pub fn count_within(&self, limit: Duration) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .take_while(|(bucket, _)| bucket_edge(*bucket).is_some_and(|edge| edge <= limit))
            .map(|(_, n)| n)
            .sum()
    }

    /// What was counted after `earlier`, a copy taken before this one.
    pub fn since(&self, earlier: &DelayHistogram) -> DelayHistogram {
        DelayHistogram {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// The delay that the fraction `q` of datagrams stayed within, as the upper edge of its bucket
    /// (10 µs wide below 2 ms, 1 ms below 100 ms); `None` if nothing was counted, or if it is over
    /// 100 ms.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_edge(bucket);
            }
        }
        None
    }
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

/// Starts one worker per available core; see [`start_workers`].
pub async fn start(config: DriverConfig) -> Result<(SfuHandle, mpsc::Receiver<RecordedFrame>), DriverError> {
    let cores = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    start_workers(config, cores)
}

/// Turns off transparent huge pages for the whole process; call it once, early, in a process that
/// runs the SFU. A fault on a huge page zeroes 2 MiB at once, and where the host takes a VM's free
/// memory back, each took about 5 ms of a worker's time: measured with the SFU bench at 30 calls,
/// the SFU's own p99 went from 6–10 ms with them to under 2 ms without. Nothing Confide does gains
/// enough from huge pages to make up for that.
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    nix::sys::prctl::set_thp_disable(true).map_err(io::Error::from)
}

/// Binds each worker's socket and starts each worker on a thread of its own (`sfu-worker-<i>`),
/// so that media never waits behind the caller's other tasks and a worker's socket, timers and
/// wake-ups stay on one core. Returns the handle and the recorder's channel: every frame any
/// participant sends, tagged with room and sender.
pub fn start_workers(
    config: DriverConfig,
    workers: NonZeroUsize,
) -> Result<(SfuHandle, mpsc::Receiver<RecordedFrame>), DriverError> {
    let (recorded_tx, recorded) = mpsc::channel(RECORDED_CAPACITY);
    let recorder_dropped = Arc::new(AtomicU64::new(0));
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::with_capacity(workers.get());
    let mut handles = Vec::with_capacity(workers.get());
    for i in 0..workers.get() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DriverError::Spawn)?;
        let socket = std::net::UdpSocket::bind(worker_addr(config.bind, i)?).map_err(DriverError::Bind)?;
        socket.set_nonblocking(true).map_err(DriverError::Bind)?;
        let sock = socket2::SockRef::from(&socket);
        // Best effort: smaller buffers only mean losses under bursts.
        if let Err(e) = sock
            .set_recv_buffer_size(SOCKET_BUFFER)
            .and_then(|()| sock.set_send_buffer_size(SOCKET_BUFFER))
        {
            warn!(error = %e, "could not enlarge the SFU socket's buffers");
        }
        // Best effort too: without them, forwarding delays are not measured.
        if let Err(e) = sock::setsockopt(&socket, sockopt::ReceiveTimestampns, &true) {
            warn!(error = %e, "could not turn on receive timestamps on the SFU socket");
        }
        let public_addr = match config.public_addr {
            Some(addr) => worker_addr(addr, i)?,
            None => socket.local_addr().map_err(DriverError::Bind)?,
        };
        let sfu = Sfu::new(public_addr)?;
        // Batched reads and segmented sends where the kernel has them, one datagram at a time
        // where it has not.
        let io = UdpSocketState::new(UdpSockRef::from(&socket)).map_err(DriverError::Bind)?;
        // Registered with the worker's own runtime, whose thread drives it.
        let socket = {
            let _entered = runtime.enter();
            UdpSocket::from_std(socket).map_err(DriverError::Bind)?
        };
        let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let task = Task {
            socket,
            sfu,
            recorded: recorded_tx.clone(),
            recorder_dropped: recorder_dropped.clone(),
            counters: counters.clone(),
            io,
            receive_buffer: vec![0; RECEIVE_DATAGRAMS * RECEIVE_BUFFER],
            arrivals: Vec::with_capacity(RECEIVE_DATAGRAMS),
            unsent: Vec::new(),
            run: Run::new(),
            next: None,
            recorded_pending: Vec::with_capacity(RECORDED_BATCH),
            recorded_since: None,
        };
        tasks.push((runtime, task, command_rx));
        handles.push(Worker {
            commands,
            public_addr,
        });
    }
    // Only once every socket is bound, so that a failed bind leaves no worker running; if a thread
    // can't start, those already started stop as the handles are dropped here.
    for (i, (runtime, task, command_rx)) in tasks.into_iter().enumerate() {
        std::thread::Builder::new()
            .name(format!("sfu-worker-{i}"))
            .spawn(move || runtime.block_on(task.run(command_rx)))
            .map_err(DriverError::Spawn)?;
    }
    Ok((
        SfuHandle {
            workers: handles.into(),
            recorder_dropped,
            counters,
        },
        recorded,
    ))
}

/// Worker `i`'s address: the port `i` after `first`'s, or any free port if `first`'s is 0.
fn worker_addr(first: SocketAddr, i: usize) -> Result<SocketAddr, DriverError> {
    if first.port() == 0 {
        return Ok(first);
    }
    let port = u16::try_from(i)
        .ok()
        .and_then(|i| first.port().checked_add(i))
        .ok_or(DriverError::PortRange(i))?;
    Ok(SocketAddr::new(first.ip(), port))
}

impl SfuHandle {
    /// The address the first worker announces to browsers; the others announce the ports after it.
    pub fn public_addr(&self) -> SocketAddr {
        self.workers[0].public_addr
    }

    /// The address each worker announces, in order.
    pub fn public_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.public_addr).collect()
    }

    /// Frames dropped because the recorder's channel was full. The call goes on regardless:
    /// holding back media for a slow recorder would stall both participants.
    pub fn recorder_dropped(&self) -> u64 {
        self.recorder_dropped.load(Ordering::Relaxed)
    }

    /// How long every datagram received so far took from reaching a worker's socket to the end of
    /// the send of what it made. Datagrams that arrive without the kernel's receive timestamp are not
    /// counted.
    pub fn forward_delays(&self) -> DelayHistogram {
        let delays = &self.counters.delays;
        DelayHistogram {
            counts: delays.buckets.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum_us: delays.sum_us.load(Ordering::Relaxed),
        }
    }

    /// What has gone through the sockets so far.
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
        Ok(self.ask(room, |reply| Command::OpenRoom(room, reply)).await??)
    }

    pub async fn close_room(&self, room: RoomId) -> Result<bool, DriverError> {
        self.ask(room, |reply| Command::CloseRoom(room, reply)).await
    }

    /// See [`Sfu::join`]; takes the offer's SDP and returns the answer's.
    pub async fn join(&self, room: RoomId, who: Participant, offer: String) -> Result<String, DriverError> {
        Ok(self
            .ask(room, |reply| Command::Join(room, who, offer, reply))
            .await??)
    }

    /// See [`Sfu::renegotiate`].
    pub async fn renegotiate(
        &self,
        room: RoomId,
        participant: ParticipantId,
        offer: String,
    ) -> Result<String, DriverError> {
        Ok(self
            .ask(room, |reply| {
                Command::Renegotiate(room, participant, offer, reply)
            })
            .await??)
    }

    pub async fn leave(&self, room: RoomId, participant: ParticipantId) -> Result<bool, DriverError> {
        self.ask(room, |reply| Command::Leave(room, participant, reply))
            .await
    }

    /// Asks the worker that owns `room`: a room lives on one worker, chosen by its id, so every
    /// call of a room reaches the same `Sfu` without a shared table.
    async fn ask<T>(
        &self,
        room: RoomId,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DriverError> {
        let worker = (room.0.as_u128() % self.workers.len() as u128) as usize;
        let (reply, answer) = oneshot::channel();
        self.workers[worker]
            .commands
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
    io: UdpSocketState,
    receive_buffer: Vec<u8>,
    /// What each datagram buffer of the last read holds.
    arrivals: Vec<Arrival>,
    /// When the datagrams handled since everything they made was last sent reached the socket.
    unsent: Vec<SystemTime>,
    /// The datagrams being sent, held while the socket's buffer is full: nothing after them goes
    /// first.
    run: Run,
    /// A datagram taken from the SFU that could not join the run before it.
    next: Option<Transmit>,
    /// Recorded frames not yet handed over, in order, and when the first of them was taken.
    recorded_pending: Vec<RecordedFrame>,
    recorded_since: Option<Instant>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // Made on the worker's thread: the headers hold pointers, so they can't be sent to it. Room
        // for every control message the socket has turned on: the receive time, the size of
        // coalesced datagrams, and quinn-udp's destination address and ECN bits.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
            RECEIVE_DATAGRAMS,
            Some(nix::cmsg_space!(
                nix::libc::timespec,
                i32,
                nix::libc::in6_pktinfo,
                nix::libc::in_pktinfo,
                i32
            )),
        );
        loop {
            self.flush().await;
            let deadline = self
                .sfu
                .next_timeout()
                .unwrap_or_else(|| Instant::now() + IDLE_WAKE);
            let deadline = match self.recorded_since {
                Some(since) => deadline.min(since + RECORDED_DELAY),
                None => deadline,
            };
            tokio::select! {
                readable = self.socket.readable() => match readable {
                    Ok(()) => self.receive(&mut headers),
                    Err(e) => warn!(error = %e, "SFU socket failed"),
                },
                command = commands.recv() => {
                    // Frames received before a signaling step reach the recorder before its
                    // effects do (a room closed, a participant gone).
                    self.hand_over_recorded();
                    match command {
                        Some(command) => self.command(command),
                        None => return,
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
            // On a busy socket the select may pick datagrams over a timer that is also due.
            let now = Instant::now();
            if self.sfu.next_timeout().is_some_and(|t| t <= now) {
                self.sfu.handle_timeout(now);
            }
        }
    }

    /// Handles the datagrams waiting on the socket, [`RECEIVE_READS`] reads of them at most. After
    /// each read, the connections written to run their timers, and what they send goes out.
    fn receive(&mut self, headers: &mut MultiHeaders<SockaddrStorage>) {
        let mut counts = Counts::default();
        for _ in 0..RECEIVE_READS {
            let fd = self.socket.as_raw_fd();
            let (buffer, arrivals) = (&mut self.receive_buffer, &mut self.arrivals);
            let read = self.socket.try_io(Interest::READABLE, || {
                let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffer
                    .chunks_mut(RECEIVE_BUFFER)
                    .map(|chunk| [IoSliceMut::new(chunk)])
                    .collect();
                let received = sock::recvmmsg(fd, headers, slices.iter_mut(), MsgFlags::empty(), None)
                    .map_err(io::Error::from)?;
                arrivals.clear();
                arrivals.extend(received.map(|message| Arrival::of(&message)));
                Ok(arrivals.len())
            });
            let n = match read {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // A UDP read error concerns one datagram (or an ICMP error for one peer).
                Err(e) => {
                    warn!(error = %e, "SFU socket read failed");
                    continue;
                }
            };
            let now = Instant::now();
            let buffers = self.receive_buffer.chunks(RECEIVE_BUFFER);
            for (arrival, buffer) in self.arrivals.iter().zip(buffers) {
                let Some(source) = arrival.source else {
                    continue;
                };
                let stride = arrival.stride.unwrap_or(arrival.len).max(1);
                for datagram in buffer[..arrival.len].chunks(stride) {
                    counts.datagrams_received += 1;
                    counts.bytes_received += datagram.len() as u64;
                    self.sfu.handle_datagram(source, datagram, now);
                    self.unsent.extend(arrival.at);
                }
            }
            self.sfu.handle_timeout(now);
            if !self.send_queued(&mut counts) || n < RECEIVE_DATAGRAMS {
                break;
            }
        }
        self.counters.add(&counts);
    }

    /// Counts the forwarding delays of the datagrams handled since the last time everything was
    /// sent; called when it all has been again.
    fn all_sent(&mut self) {
        if self.unsent.is_empty() {
            return;
        }
        let now = SystemTime::now();
        for at in self.unsent.drain(..) {
            self.counters
                .delays
                .add(now.duration_since(at).unwrap_or_default());
        }
    }

    /// Sends queued datagrams while the socket takes them without waiting; false if it is full, and
    /// the run it refused is kept for [`flush`](Self::flush) to wait on. Datagrams for one
    /// destination that follow each other, all of one size but the last, go in one system call as
    /// segments of one (UDP GSO): a burst of a video frame's packets for one receiver costs the
    /// kernel's send path once.
    fn send_queued(&mut self, counts: &mut Counts) -> bool {
        loop {
            if self.run.count == 0 && !self.gather() {
                self.all_sent();
                return true;
            }
            let run = &self.run;
            let transmit = quinn_udp::Transmit {
                destination: run.destination,
                ecn: None,
                contents: &run.bytes,
                segment_size: (run.count > 1).then_some(run.segment),
                src_ip: None,
            };
            let (socket, io) = (&self.socket, &self.io);
            match socket.try_io(Interest::WRITABLE, || {
                io.try_send(UdpSockRef::from(socket), &transmit)
            }) {
                Ok(()) => {
                    counts.datagrams_sent += run.count as u64;
                    counts.bytes_sent += run.bytes.len() as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => warn!(error = %e, destination = %run.destination, "SFU socket send failed"),
            }
            self.run.clear();
        }
    }

    /// Takes the next datagrams to send into [`run`](Self::run): the next one, and those after it
    /// that can go with it as segments. False if there is none.
    fn gather(&mut self) -> bool {
        let Some(first) = self.next.take().or_else(|| self.sfu.poll_transmit()) else {
            return false;
        };
        let run = &mut self.run;
        run.destination = first.destination;
        run.segment = first.contents.len();
        run.count = 1;
        run.bytes.extend_from_slice(&first.contents);
        let max = self.io.max_gso_segments();
        while run.count < max && run.bytes.len() + run.segment <= MAX_SEGMENTED {
            let Some(t) = self.sfu.poll_transmit() else {
                break;
            };
            if t.destination != run.destination || t.contents.len() > run.segment {
                self.next = Some(t);
                break;
            }
            run.bytes.extend_from_slice(&t.contents);
            run.count += 1;
            // Only the last segment may be shorter.
            if t.contents.len() < run.segment {
                break;
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
                self.run.clear();
            }
        }
        self.counters.add(&counts);
        while let Some(frame) = self.sfu.poll_recorded() {
            if self.recorded_pending.is_empty() {
                self.recorded_since = Some(Instant::now());
            }
            self.recorded_pending.push(frame);
        }
        if self.recorded_pending.len() >= RECORDED_BATCH
            || self
                .recorded_since
                .is_some_and(|since| since.elapsed() >= RECORDED_DELAY)
        {
            self.hand_over_recorded();
        }
    }

    fn hand_over_recorded(&mut self) {
        self.recorded_since = None;
        for frame in self.recorded_pending.drain(..) {
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

/// A datagram buffer of a read: from whom, how many bytes, the size of each datagram in it when the
/// kernel coalesced several from one sender (UDP GRO), and when the first of them reached the socket.
struct Arrival {
    source: Option<SocketAddr>,
    len: usize,
    stride: Option<usize>,
    at: Option<SystemTime>,
}

impl Arrival {
    fn of(message: &sock::RecvMsg<'_, '_, SockaddrStorage>) -> Arrival {
        // Only fails when the control messages were cut short, which their space is sized against.
        // Without them a buffer of coalesced datagrams can't be told apart, so it is dropped.
        let controls = match message.cmsgs() {
            Ok(controls) => controls,
            Err(e) => {
                warn!(error = %e, "SFU socket read without its control messages; dropped");
                return Arrival {
                    source: None,
                    len: 0,
                    stride: None,
                    at: None,
                };
            }
        };
        let mut stride = None;
        let mut at = None;
        for control in controls {
            match control {
                ControlMessageOwned::UdpGroSegments(size) => stride = usize::try_from(size).ok(),
                ControlMessageOwned::ScmTimestampns(ts) => {
                    at = u64::try_from(ts.tv_sec())
                        .ok()
                        .zip(u32::try_from(ts.tv_nsec()).ok())
                        .and_then(|(secs, nanos)| {
                            SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
                        });
                }
                _ => {}
            }
        }
        Arrival {
            source: message.address.and_then(|a| socket_addr(&a)),
            len: message.bytes,
            stride,
            at,
        }
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
        (Some(v4), _) => Some(SocketAddr::V4((*v4).into())),
        (None, Some(v6)) => Some(SocketAddr::V6((*v6).into())),
        (None, None) => None,
    }
}

/// Datagrams for one destination, sent together: `count` of them, each `segment` bytes but the
/// last, one after the other in `bytes`.
struct Run {
    destination: SocketAddr,
    segment: usize,
    count: usize,
    bytes: Vec<u8>,
}

impl Run {
    fn new() -> Run {
        Run {
            destination: (Ipv4Addr::UNSPECIFIED, 0).into(),
            segment: 0,
            count: 0,
            bytes: Vec::with_capacity(MAX_SEGMENTED),
        }
    }

    fn clear(&mut self) {
        self.count = 0;
        self.bytes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers take the ports after the configured one, so a firewall opens one range; port 0 stays
    /// "any free port" for each, and a range past the last port is refused rather than wrapped.
    #[test]
    fn workers_take_the_ports_after_the_first() {
        let first: SocketAddr = "0.0.0.0:3478".parse().unwrap();
        assert_eq!(worker_addr(first, 0).unwrap(), first);
        assert_eq!(worker_addr(first, 3).unwrap(), "0.0.0.0:3481".parse().unwrap());
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(worker_addr(any, 5).unwrap(), any);
        let last: SocketAddr = "127.0.0.1:65535".parse().unwrap();
        assert!(matches!(worker_addr(last, 1), Err(DriverError::PortRange(1))));
    }

    /// Each datagram a worker reads is timed from the kernel's receive timestamp, whether or not it
    /// belongs to a call; bursts from one sender (which the kernel may coalesce) count per datagram.
    #[tokio::test]
    async fn every_datagram_read_is_timed_from_its_arrival() {
        let (sfu, _recorded) = start_workers(DriverConfig::default(), NonZeroUsize::MIN).unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..40 {
            sender.send_to(&[0x80; 1200], sfu.public_addr()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while sfu.forward_delays().count() < 40 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let delays = sfu.forward_delays();
        assert_eq!(delays.count(), 40);
        assert_eq!(sfu.stats().datagrams_received, 40);
        let p99 = delays.quantile(0.99).expect("within 100 ms");
        assert!(p99 < Duration::from_millis(100), "{p99:?}");
        assert!(delays.sum() <= p99 * 40, "{:?}", delays.sum());
    }

    #[test]
    fn delays_fall_in_buckets_whose_edges_bound_them() {
        for us in [0, 9, 10, 1999, 2000, 2999, 99_999, 100_000, 5_000_000] {
            let delay = Duration::from_micros(us);
            let bucket = delay_bucket(delay);
            assert!(bucket < DELAY_BUCKETS);
            match bucket_edge(bucket) {
                Some(edge) => {
                    assert!(delay < edge, "{us} µs over its edge {edge:?}");
                    assert!(
                        bucket == 0 || bucket_edge(bucket - 1).unwrap() <= delay,
                        "{us} µs"
                    );
                }
                None => assert!(delay >= Duration::from_millis(100), "{us} µs"),
            }
        }
        let mut counts = vec![0; DELAY_BUCKETS];
        counts[delay_bucket(Duration::from_micros(55))] = 98;
        counts[delay_bucket(Duration::from_micros(2500))] = 2;
        let histogram = DelayHistogram {
            counts,
            sum_us: 98 * 55 + 2 * 2500,
        };
        assert_eq!(histogram.quantile(0.5), Some(Duration::from_micros(60)));
        assert_eq!(histogram.count_within(Duration::from_micros(50)), 0);
        assert_eq!(histogram.count_within(Duration::from_micros(60)), 98);
        assert_eq!(histogram.count_within(Duration::from_millis(2)), 98);
        assert_eq!(histogram.count_within(Duration::from_millis(3)), 100);
        assert_eq!(histogram.sum(), Duration::from_micros(10_390));
        assert_eq!(histogram.quantile(0.98), Some(Duration::from_micros(60)));
        assert_eq!(histogram.quantile(0.99), Some(Duration::from_micros(3000)));
        let empty = histogram.since(&histogram);
        assert_eq!(
            (empty.count(), empty.quantile(0.5), empty.sum()),
            (0, None, Duration::ZERO)
        );
    }

    /// Every worker announces its own socket, and a room's signaling always reaches the same one.
    #[tokio::test]
    async fn each_worker_announces_its_own_socket() {
        let workers = NonZeroUsize::new(3).unwrap();
        let (sfu, _recorded) = start_workers(DriverConfig::default(), workers).unwrap();
        let addrs = sfu.public_addrs();
        assert_eq!(addrs.len(), 3);
        assert_eq!(sfu.public_addr(), addrs[0]);
        let ports: std::collections::HashSet<_> = addrs.iter().map(SocketAddr::port).collect();
        assert_eq!(ports.len(), 3, "{addrs:?}");
        for n in 0..12u128 {
            let room = RoomId(uuid::Uuid::from_u128(n));
            sfu.open_room(room).await.unwrap();
            assert!(matches!(
                sfu.open_room(room).await,
                Err(DriverError::Sfu(SfuError::RoomExists(r))) if r == room
            ));
            assert!(sfu.close_room(room).await.unwrap());
        }
    }
}
