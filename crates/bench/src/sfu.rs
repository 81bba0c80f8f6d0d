//! The SFU under load: synthetic str0m clients (full ICE, DTLS, SRTP, each on its own UDP socket on
//! 127.0.0.1) make concurrent 1:1 calls through the real driver with the real recorder writing encrypted
//! segments, each side sending 720p-like video (2.5 Mbit/s at 30 fps) and Opus-like audio (32 kbit/s in
//! 20 ms frames). Every frame carries its send time and number, so the receiving client measures latency and
//! loss. In the same run, two floors: the same clients send the same frames as plain UDP packets through a
//! bare relay thread (no ICE, no SRTP, no SFU logic), which shows what the network alone costs; and the same
//! str0m clients make the same calls connected directly to each other, with nothing between them. The SFU's
//! latency minus the direct calls' is what the SFU adds (see [`run_direct`]). The SFU's workers and the recorder (with its segments' sync threads) run on threads of their own,
//! whose CPU time gives forwarded packets per core, whatever the clients cost. Last, the recording writer's throughput against raw AES-256-GCM.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use confide_media::DataKey;
use confide_media::SegmentHeader;
use confide_media::sfu::driver::{self, DelayHistogram, DriverConfig, SfuHandle};
use confide_media::sfu::recorder::{self, Recorder};
use confide_media::sfu::{Participant, ParticipantId, Role, RoomId};
use confide_media::throughput::{self, Throughput};
use rand::RngCore;
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use uuid::Uuid;

use crate::Args;

/// 2.5 Mbit/s at 30 frames per second.
const VIDEO_FRAME_BYTES: usize = 10_417;
const VIDEO_INTERVAL: Duration = Duration::from_nanos(33_333_333);
/// 32 kbit/s in 20 ms frames.
const AUDIO_FRAME_BYTES: usize = 80;
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// The floor splits a video frame into this many packets, about as many as str0m's packetizer makes.
const FLOOR_VIDEO_PACKETS: usize = 9;
/// Floor packet head: kind, frame number, send time, packet index, packet count.
const FLOOR_HEAD: usize = 1 + 4 + 8 + 1 + 1;
/// Traffic before the measured window, for queues and rates to settle.
const WARMUP: Duration = Duration::from_secs(1);
/// After the window, for frames sent in it to arrive.
const GRACE: Duration = Duration::from_millis(500);
/// How long all calls may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A client this far behind its send schedule skips frames rather than bursting them.
const MAX_LAG: Duration = Duration::from_millis(200);
/// Socket buffers: the relay gets what the SFU's driver sets for its shared socket, so both ride out
/// the same scheduling gaps; each client's socket carries one call's side.
const FORWARDER_BUFFER: usize = 4 * 1024 * 1024;
const CLIENT_BUFFER: usize = 1024 * 1024;
/// Writer throughput: payload through the writer and through raw AES-GCM, per round.
const WRITER_MIB: usize = 64;
const WRITER_ROUNDS: usize = 3;

const TARGET_PER_CORE: f64 = 80_000.0;
const TARGET_ADDED_P99_MS: f64 = 2.0;
const TARGET_CALLS: u64 = 100;
const TARGET_WRITER_RATIO: f64 = 0.70;

/// How long the scenario may take before it counts as hung.
pub(crate) fn budget(args: &Args) -> Duration {
    2 * (Duration::from_secs(args.seconds) + WARMUP + GRACE) + CONNECT_TIMEOUT + Duration::from_secs(120)
}

/// Runs the SFU scenario and reports it; `Ok(false)` if a target was missed.
pub(crate) async fn run(args: &Args) -> anyhow::Result<bool> {
    let calls = usize::try_from(args.calls)?;
    let measure = Duration::from_secs(args.seconds);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "sfu: {calls} recorded 1:1 calls, each side {} kbit/s video + {} kbit/s audio, {} s measured after {} s \
         warm-up, {cores} cores, loopback",
        VIDEO_FRAME_BYTES as u64 * 8 * 30 / 1000,
        AUDIO_FRAME_BYTES as u64 * 8 * 50 / 1000,
        measure.as_secs(),
        WARMUP.as_secs()
    );
    // Clients and forwarder share this machine's cores with whatever else runs on it.
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average before the run: {}", load.trim());
    }
    let mut noise = vec![0u8; VIDEO_FRAME_BYTES];
    rand::rng().fill_bytes(&mut noise);
    let noise: Arc<[u8]> = noise.into();
    // As many client threads as cores by default: one thread for all clients would saturate before the
    // SFU does and show its lateness as the SFU's.
    let client_threads = match args.client_threads {
        Some(n) => usize::try_from(n)?,
        None => cores,
    };
    let clients = Runtime::start("bench-clients", client_threads)?;

    // Two sockets per call, kept for both runs so the floor and the SFU serve the same clients.
    let sockets = (0..2 * calls)
        .map(|_| bind(CLIENT_BUFFER))
        .collect::<Result<Vec<_>, _>>()?;
    let floor = run_floor(&clients, sockets, &noise, measure).await?;
    let (sockets, floor) = floor;
    let direct = run_direct(&clients, calls, &noise, measure).await?;

    let dir = tempfile::tempdir()?;
    let recordings = dir.path().join("recordings");
    let workers = match args.sfu_workers {
        Some(n) => NonZeroUsize::try_from(usize::try_from(n)?)?,
        None => NonZeroUsize::new(cores).unwrap_or(NonZeroUsize::MIN),
    };
    println!("sfu workers: {workers}, client threads: {client_threads}");
    let server = Server::start(recordings.clone(), workers).await?;
    let sfu = run_sfu(&clients, &server, sockets, &noise, measure).await;
    server.stop().await;
    let (sfu, sfu_delays) = sfu?;
    let recorded_bytes = dir_bytes(&recordings)?;
    drop(clients);
    // After the calls, so that neither disturbs the other; blocking file work off the async threads.
    let scratch = dir.path().join("writer");
    std::fs::create_dir(&scratch)?;
    let writer =
        tokio::task::spawn_blocking(move || throughput::measure(WRITER_MIB, WRITER_ROUNDS, &scratch))
            .await??;

    let report = Report {
        calls,
        measure,
        floor,
        direct,
        sfu,
        sfu_delays,
        recorded_bytes,
        recorder_dropped: server.sfu.recorder_dropped(),
        writer,
    };
    Ok(report.print())
}

/// What the clients saw in one run, summed over all of them.
#[derive(Default)]
struct Tally {
    /// Frames sent in the window: audio, video.
    sent: [u64; 2],
    received: [u64; 2],
    /// Floor only: packets sent and received in the window.
    sent_packets: u64,
    received_packets: u64,
    /// Frames a client could not send on time and skipped.
    skipped: u64,
    /// Clients whose connection failed (a handshake that timed out on an overloaded machine).
    failed: u64,
    /// Send time to arrival at the receiving client's application, per frame received in the window.
    latencies_us: Vec<u32>,
}

impl Tally {
    fn absorb(&mut self, other: Tally) {
        for k in 0..2 {
            self.sent[k] += other.sent[k];
            self.received[k] += other.received[k];
        }
        self.sent_packets += other.sent_packets;
        self.received_packets += other.received_packets;
        self.skipped += other.skipped;
        self.failed += other.failed;
        self.latencies_us.extend(other.latencies_us);
    }

    fn frame_loss(&self) -> f64 {
        let sent = self.sent[0] + self.sent[1];
        let received = self.received[0] + self.received[1];
        if sent == 0 {
            return 1.0;
        }
        sent.saturating_sub(received) as f64 / sent as f64
    }

    fn percentile_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// A socket on loopback with `buffer` bytes of send and receive buffer (as far as the kernel allows).
fn bind(buffer: usize) -> std::io::Result<StdUdpSocket> {
    let socket = StdUdpSocket::bind("127.0.0.1:0")?;
    let sock = socket2::SockRef::from(&socket);
    sock.set_recv_buffer_size(buffer)?;
    sock.set_send_buffer_size(buffer)?;
    Ok(socket)
}

/// One run's figures: what the clients saw, and what the forwarding threads did in the window.
struct Run {
    tally: Tally,
    /// Datagrams the forwarder sent during the window.
    forwarded: u64,
    /// CPU time of the forwarding threads during the window, by thread name.
    cpu: Vec<(String, Duration)>,
    /// CPU time of the whole process during the window.
    process_cpu: Duration,
    window: Duration,
}

impl Run {
    fn cpu_of(&self, prefix: &str) -> Duration {
        self.cpu
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, t)| *t)
            .sum()
    }
}

/// The start and end of the measured window and the clients' stop signal, shared with every client.
struct Control {
    base: Instant,
    /// Nanoseconds since `base`; `u64::MAX` until set.
    window_start: AtomicU64,
    window_end: AtomicU64,
    exit: AtomicBool,
    /// Clients that have received the other side's video.
    ready: AtomicUsize,
}

impl Control {
    fn new() -> Arc<Control> {
        Arc::new(Control {
            base: Instant::now(),
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
            exit: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
        })
    }

    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn in_window(&self, sent_ns: u64) -> bool {
        sent_ns >= self.window_start.load(Ordering::Relaxed)
            && sent_ns < self.window_end.load(Ordering::Relaxed)
    }

    /// Opens the window after the warm-up and returns its start and end.
    fn open_window(&self, measure: Duration) -> (Instant, Instant) {
        let start = Instant::now() + WARMUP;
        let end = start + measure;
        self.window_start.store(self.ns(start), Ordering::Relaxed);
        self.window_end.store(self.ns(end), Ordering::Relaxed);
        (start, end)
    }

    fn exiting(&self) -> bool {
        self.exit.load(Ordering::Relaxed)
    }
}

/// When each client sends its next audio and video frame; clients start spread over one frame interval
/// so that their sends do not all fall on the same instant.
struct Schedule {
    next: [Instant; 2],
    seq: [u32; 2],
}

const INTERVALS: [Duration; 2] = [AUDIO_INTERVAL, VIDEO_INTERVAL];
const AUDIO: usize = 0;
const VIDEO: usize = 1;

impl Schedule {
    fn new(index: usize, of: usize, now: Instant) -> Schedule {
        let spread = |interval: Duration| interval.mul_f64(index as f64 / of.max(1) as f64);
        Schedule {
            next: [now + spread(AUDIO_INTERVAL), now + spread(VIDEO_INTERVAL)],
            seq: [0, 0],
        }
    }

    fn wake(&self) -> Instant {
        self.next[0].min(self.next[1])
    }

    /// The next frame due at `now`, if any, with its number; frames more than [`MAX_LAG`] late are
    /// counted in `skipped` instead.
    fn take_due(&mut self, now: Instant, skipped: &mut u64) -> Option<(usize, u32)> {
        let kind = if self.next[AUDIO] <= self.next[VIDEO] {
            AUDIO
        } else {
            VIDEO
        };
        if self.next[kind] > now {
            return None;
        }
        while now.saturating_duration_since(self.next[kind]) > MAX_LAG {
            self.next[kind] += INTERVALS[kind];
            self.seq[kind] += 1;
            *skipped += 1;
        }
        let seq = self.seq[kind];
        self.next[kind] += INTERVALS[kind];
        self.seq[kind] += 1;
        Some((kind, seq))
    }
}

/// A Tokio runtime on `threads` named threads of its own, so its CPU time can be told apart.
struct Runtime {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runtime {
    fn start(name: &str, threads: usize) -> anyhow::Result<Runtime> {
        let runtime = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()?
        };
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })?;
        Ok(Runtime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The SFU driver's workers and the recorder on threads of their own, as in the server but apart from
/// the clients.
struct Server {
    _runtime: Runtime,
    sfu: SfuHandle,
    recorder: Recorder,
}

impl Server {
    async fn start(recordings: std::path::PathBuf, workers: NonZeroUsize) -> anyhow::Result<Server> {
        // The recorder's forwarding task; the workers have threads of their own, named `sfu-worker-…`.
        let runtime = Runtime::start("sfu", 1)?;
        let (sfu, recorder) = runtime
            .handle
            .spawn(async move {
                let (sfu, frames) = driver::start_workers(DriverConfig::default(), workers)?;
                let recorder = Recorder::start(recordings, frames)?;
                anyhow::Ok((sfu, recorder))
            })
            .await??;
        Ok(Server {
            _runtime: runtime,
            sfu,
            recorder,
        })
    }

    async fn stop(&self) {
        self.recorder.shutdown().await;
    }
}

/// The floor: the same clients and frames as plain UDP through a bare relay thread.
async fn run_floor(
    clients: &Runtime,
    sockets: Vec<StdUdpSocket>,
    noise: &Arc<[u8]>,
    measure: Duration,
) -> anyhow::Result<(Vec<StdUdpSocket>, Run)> {
    let relay_socket = bind(FORWARDER_BUFFER)?;
    let relay = relay_socket.local_addr()?;
    let addrs = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<Vec<_>, _>>()?;
    let routes: HashMap<SocketAddr, SocketAddr> = addrs
        .chunks(2)
        .flat_map(|pair| [(pair[0], pair[1]), (pair[1], pair[0])])
        .collect();
    let relayed = Arc::new(AtomicU64::new(0));
    let stop_relay = Arc::new(AtomicBool::new(false));
    let relay_thread = {
        let (relayed, stop) = (relayed.clone(), stop_relay.clone());
        std::thread::Builder::new()
            .name("floor-relay".into())
            .spawn(move || relay_loop(relay_socket, &routes, &relayed, &stop))?
    };

    let ctl = Control::new();
    let n = sockets.len();
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let (ctl, noise) = (ctl.clone(), noise.clone());
            clients
                .handle
                .spawn(floor_client(socket, relay, ctl, noise, i, n))
        })
        .collect();
    let (start, end) = ctl.open_window(measure);
    let threads = ["floor-relay", "bench-clients"];
    let run = measure_window(start, end, &threads, || relayed.load(Ordering::Relaxed)).await;
    tokio::time::sleep(GRACE).await;
    ctl.exit.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    let mut sockets = Vec::with_capacity(n);
    for task in tasks {
        let (socket, t) = task.await??;
        sockets.push(socket);
        tally.absorb(t);
    }
    stop_relay.store(true, Ordering::Relaxed);
    relay_thread
        .join()
        .map_err(|_| anyhow!("the relay thread panicked"))??;
    Ok((sockets, run.with(tally)))
}

/// The same str0m clients and frames as through the SFU, each call's two sides connected to each other
/// directly (full ICE, DTLS, SRTP), with nothing between them. The SFU's added latency is its run's
/// minus this one's: both sides do the same work for every frame (packetizing, encrypting, depacketizing,
/// and waiting for a core on this machine while the other clients do theirs), so what remains is the
/// forwarding and what the SFU's own work costs the clients in waiting. The bare relay's floor leaves the
/// clients' str0m work out and would count all of it as the SFU's.
async fn run_direct(
    clients: &Runtime,
    calls: usize,
    noise: &Arc<[u8]>,
    measure: Duration,
) -> anyhow::Result<Run> {
    let ctl = Control::new();
    let n = 2 * calls;
    let mut tasks = Vec::with_capacity(n);
    for call in 0..calls {
        let now = Instant::now();
        let mut sides = Vec::with_capacity(2);
        for _ in 0..2 {
            let socket = bind(CLIENT_BUFFER)?;
            socket.set_nonblocking(true)?;
            let local = socket.local_addr()?;
            let mut rtc = Rtc::builder().build(now);
            rtc.add_local_candidate(Candidate::host(local, "udp")?);
            sides.push((rtc, socket));
        }
        let (mut answerer, answerer_socket) = sides.pop().context("two sides")?;
        let (mut offerer, offerer_socket) = sides.pop().context("two sides")?;
        let mut api = offerer.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().context("an offer")?;
        let answer = answerer.sdp_api().accept_offer(offer)?;
        offerer.sdp_api().accept_answer(pending, answer)?;
        for (index, rtc, socket) in [
            (2 * call, offerer, offerer_socket),
            (2 * call + 1, answerer, answerer_socket),
        ] {
            let (ctl, noise) = (ctl.clone(), noise.clone());
            let schedule = Schedule::new(index, n, now);
            tasks.push(clients.handle.spawn(async move {
                let socket = UdpSocket::from_std(socket)?;
                let client = CallClient::new(rtc, socket, [audio, video], ctl, noise, schedule)?;
                anyhow::Ok(client.finish().await)
            }));
        }
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while ctl.ready.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (start, end) = ctl.open_window(measure);
    let window = measure_window(start, end, &["bench-clients"], || 0).await;
    tokio::time::sleep(GRACE).await;
    ctl.exit.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for task in tasks {
        tally.absorb(task.await??);
    }
    Ok(window.with(tally))
}

/// Forwards every datagram to the other socket of its pair: the least a forwarder can do.
fn relay_loop(
    socket: StdUdpSocket,
    routes: &HashMap<SocketAddr, SocketAddr>,
    relayed: &AtomicU64,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, source)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Some(destination) = routes.get(&source)
            && socket.send_to(&buf[..n], destination).is_ok()
        {
            relayed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// A run's forwarder-side figures over the window, to be completed by the clients' tally.
struct Window {
    forwarded: u64,
    cpu: Vec<(String, Duration)>,
    process_cpu: Duration,
    window: Duration,
}

impl Window {
    fn with(self, tally: Tally) -> Run {
        Run {
            tally,
            forwarded: self.forwarded,
            cpu: self.cpu,
            process_cpu: self.process_cpu,
            window: self.window,
        }
    }
}

/// Waits out the window, reading the forwarded count and the threads' CPU time at each end.
async fn measure_window(
    start: Instant,
    end: Instant,
    threads: &[&str],
    forwarded: impl Fn() -> u64,
) -> Window {
    tokio::time::sleep_until(start.into()).await;
    let (f0, c0, p0) = (forwarded(), thread_cpu(threads), process_cpu());
    let t0 = Instant::now();
    tokio::time::sleep_until(end.into()).await;
    let (f1, c1, p1) = (forwarded(), thread_cpu(threads), process_cpu());
    let window = t0.elapsed();
    let cpu = c1
        .into_iter()
        .map(|(name, t1)| {
            let t0 = c0
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(Duration::ZERO, |(_, t)| *t);
            (name, t1.saturating_sub(t0))
        })
        .collect();
    Window {
        forwarded: f1 - f0,
        cpu,
        process_cpu: p1.saturating_sub(p0),
        window,
    }
}

async fn floor_client(
    socket: StdUdpSocket,
    relay: SocketAddr,
    ctl: Arc<Control>,
    noise: Arc<[u8]>,
    index: usize,
    of: usize,
) -> anyhow::Result<(StdUdpSocket, Tally)> {
    socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(socket)?;
    let mut tally = Tally::default();
    let mut schedule = Schedule::new(index, of, Instant::now());
    let mut buf = vec![0u8; 2048];
    let mut packet = vec![0u8; 2048];
    while !ctl.exiting() {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (n, _) = received?;
                floor_receive(&buf[..n], &ctl, &mut tally);
                while let Ok((n, _)) = socket.try_recv_from(&mut buf) {
                    floor_receive(&buf[..n], &ctl, &mut tally);
                }
            }
            () = tokio::time::sleep_until(schedule.wake().into()) => {}
        }
        let now = Instant::now();
        while let Some((kind, seq)) = schedule.take_due(now, &mut tally.skipped) {
            let sent_ns = ctl.ns(Instant::now());
            let (bytes, count) = if kind == VIDEO {
                (VIDEO_FRAME_BYTES, FLOOR_VIDEO_PACKETS)
            } else {
                (AUDIO_FRAME_BYTES, 1)
            };
            let per_packet = bytes.div_ceil(count);
            for i in 0..count {
                let len = per_packet.min(bytes - i * per_packet).max(FLOOR_HEAD);
                packet[0] = kind as u8;
                packet[1..5].copy_from_slice(&seq.to_le_bytes());
                packet[5..13].copy_from_slice(&sent_ns.to_le_bytes());
                packet[13] = i as u8;
                packet[14] = count as u8;
                packet[FLOOR_HEAD..len].copy_from_slice(&noise[FLOOR_HEAD..len]);
                // Loopback takes these at once; one it refuses counts as lost.
                let _ = socket.try_send_to(&packet[..len], relay);
            }
            if ctl.in_window(sent_ns) {
                tally.sent[kind] += 1;
                tally.sent_packets += count as u64;
            }
        }
    }
    Ok((socket.into_std()?, tally))
}

fn floor_receive(packet: &[u8], ctl: &Control, tally: &mut Tally) {
    if packet.len() < FLOOR_HEAD {
        return;
    }
    let kind = usize::from(packet[0] == VIDEO as u8);
    let sent_ns = u64::from_le_bytes(packet[5..13].try_into().expect("8 bytes"));
    if !ctl.in_window(sent_ns) {
        return;
    }
    tally.received_packets += 1;
    // A frame has arrived with its last packet; loopback keeps a socket's packets in order.
    if packet[13] + 1 == packet[14] {
        tally.received[kind] += 1;
        tally.latencies_us.push(latency_us(ctl, sent_ns));
    }
}

fn latency_us(ctl: &Control, sent_ns: u64) -> u32 {
    let now = ctl.ns(Instant::now());
    u32::try_from(now.saturating_sub(sent_ns) / 1000).unwrap_or(u32::MAX)
}

/// The calls through the SFU, with the recorder writing every room.
async fn run_sfu(
    clients: &Runtime,
    server: &Server,
    sockets: Vec<StdUdpSocket>,
    noise: &Arc<[u8]>,
    measure: Duration,
) -> anyhow::Result<(Run, DelayHistogram)> {
    let ctl = Control::new();
    let n = sockets.len();
    let mut rooms = Vec::new();
    let mut tasks = Vec::with_capacity(n);
    let mut sockets = sockets.into_iter().enumerate();
    while let (Some((i, first)), Some((j, second))) = (sockets.next(), sockets.next()) {
        let room = RoomId(Uuid::new_v4());
        server.sfu.open_room(room).await?;
        let header = SegmentHeader {
            recording: Uuid::new_v4(),
            segment: 0,
            created_at_ms: recorder::now_ms(),
        };
        server
            .recorder
            .start_segment(room, header, DataKey::generate(&mut rand::rng()), 0)
            .await?;
        rooms.push(room);
        for (index, socket, role) in [(i, first, Role::Patient), (j, second, Role::Clinician)] {
            let who = Participant {
                id: ParticipantId(Uuid::new_v4()),
                role,
            };
            server.recorder.set_consent(room, who.id, true).await?;
            let seat = Seat {
                socket,
                room,
                who,
                index,
                of: n,
            };
            let client = CallClient::join(seat, server.sfu.clone(), ctl.clone(), noise.clone());
            tasks.push(clients.handle.spawn(client));
        }
    }

    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while ctl.ready.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = ctl.ready.load(Ordering::Relaxed);
    if ready == 0 {
        ctl.exit.store(true, Ordering::Relaxed);
        bail!("no client received video within {} s", CONNECT_TIMEOUT.as_secs());
    }
    if ready < n {
        // Measured regardless: the frames their peers send count as lost.
        println!(
            "only {ready} of {n} clients received video within {} s: the machine can't hold {} calls",
            CONNECT_TIMEOUT.as_secs(),
            n / 2
        );
    }
    let (start, end) = ctl.open_window(measure);
    let sfu = server.sfu.clone();
    let delays_at_start = {
        let sfu = sfu.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            sfu.forward_delays()
        })
    };
    // Thread names as the kernel keeps them, cut to 15 bytes.
    let threads = ["sfu", "confide-recorde", "confide-segmen", "bench-clients"];
    let window = measure_window(start, end, &threads, || sfu.stats().datagrams_sent).await;
    let delays = sfu.forward_delays().since(&delays_at_start.await?);
    tokio::time::sleep(GRACE).await;
    for room in rooms {
        server.sfu.close_room(room).await?;
    }
    ctl.exit.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for task in tasks {
        tally.absorb(task.await??);
    }
    Ok((window.with(tally), delays))
}

/// A str0m peer in the browser's role, sending and receiving one audio and one video line.
struct CallClient {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    timeout: Instant,
    mids: [Mid; 2],
    /// Payload types for audio and video, once connected.
    pts: Option<[Pt; 2]>,
    keyframe_due: bool,
    ready: bool,
    ctl: Arc<Control>,
    noise: Arc<[u8]>,
    schedule: Schedule,
    tally: Tally,
}

/// Where a client sits: its socket, its call and side, and its place among all clients.
struct Seat {
    socket: StdUdpSocket,
    room: RoomId,
    who: Participant,
    index: usize,
    of: usize,
}

impl CallClient {
    async fn join(seat: Seat, sfu: SfuHandle, ctl: Arc<Control>, noise: Arc<[u8]>) -> anyhow::Result<Tally> {
        let Seat {
            socket,
            room,
            who,
            index,
            of,
        } = seat;
        let socket = UdpSocket::from_std(socket)?;
        let local = socket.local_addr()?;
        let now = Instant::now();
        let mut rtc = Rtc::builder().build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().context("an offer")?;
        let answer = sfu.join(room, who, offer.to_sdp_string()).await?;
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer)?)?;
        let client = CallClient::new(
            rtc,
            socket,
            [audio, video],
            ctl,
            noise,
            Schedule::new(index, of, now),
        )?;
        Ok(client.finish().await)
    }

    fn new(
        rtc: Rtc,
        socket: UdpSocket,
        mids: [Mid; 2],
        ctl: Arc<Control>,
        noise: Arc<[u8]>,
        schedule: Schedule,
    ) -> anyhow::Result<CallClient> {
        Ok(CallClient {
            rtc,
            local: socket.local_addr()?,
            socket,
            timeout: Instant::now(),
            mids,
            pts: None,
            keyframe_due: true,
            ready: false,
            ctl,
            noise,
            schedule,
            tally: Tally::default(),
        })
    }

    /// Runs the call until the bench ends it and returns what this side saw.
    async fn finish(mut self) -> Tally {
        // A failed connection ends this client only: what its peer sent it counts as lost.
        if let Err(e) = self.run().await {
            eprintln!("a client's connection failed: {e}");
            self.tally.failed += 1;
        }
        self.tally
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 2048];
        self.drain()?;
        while !self.ctl.exiting() {
            let wake = if self.pts.is_some() {
                self.timeout.min(self.schedule.wake())
            } else {
                self.timeout
            };
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let (n, source) = received?;
                    self.receive(&buf[..n], source)?;
                    while let Ok((n, source)) = self.socket.try_recv_from(&mut buf) {
                        self.receive(&buf[..n], source)?;
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            if self.pts.is_some() {
                while let Some((kind, seq)) = self.schedule.take_due(now, &mut self.tally.skipped) {
                    self.send(kind, seq)?;
                }
            } else {
                // Frames start with the connection; until then the schedule moves along unused.
                self.schedule = Schedule {
                    next: self.schedule.next.map(|t| t.max(now)),
                    seq: [0, 0],
                };
            }
            if self.timeout <= now {
                self.rtc.handle_input(Input::Timeout(now))?;
                self.drain()?;
            }
        }
        Ok(())
    }

    fn receive(&mut self, datagram: &[u8], source: SocketAddr) -> anyhow::Result<()> {
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, datagram) else {
            return Ok(());
        };
        self.rtc.handle_input(Input::Receive(Instant::now(), receive))?;
        self.drain()
    }

    fn drain(&mut self) -> anyhow::Result<()> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    // Loopback takes these at once; one it refuses shows up as loss.
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => {
                    let audio = self.pt(AUDIO, Codec::Opus)?;
                    let video = self.pt(VIDEO, Codec::Vp8)?;
                    self.pts = Some([audio, video]);
                }
                Output::Event(Event::KeyframeRequest(_)) => self.keyframe_due = true,
                Output::Event(Event::MediaData(data)) => {
                    let kind = if data.params.spec().codec.is_audio() {
                        AUDIO
                    } else {
                        VIDEO
                    };
                    let head = usize::from(kind == VIDEO);
                    let Some(stamp) = data.data.get(head + 4..head + 12) else {
                        continue;
                    };
                    let sent_ns = u64::from_le_bytes(stamp.try_into().expect("8 bytes"));
                    if kind == VIDEO && !self.ready {
                        self.ready = true;
                        self.ctl.ready.fetch_add(1, Ordering::Relaxed);
                    }
                    if self.ctl.in_window(sent_ns) {
                        self.tally.received[kind] += 1;
                        self.tally.latencies_us.push(latency_us(&self.ctl, sent_ns));
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    fn pt(&mut self, kind: usize, codec: Codec) -> anyhow::Result<Pt> {
        let writer = self.rtc.writer(self.mids[kind]).context("a line to send on")?;
        let params = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .with_context(|| format!("{codec:?} negotiated"))?;
        Ok(params.pt())
    }

    /// Writes frame `seq` of `kind`: the frame number and send time, then noise.
    fn send(&mut self, kind: usize, seq: u32) -> anyhow::Result<()> {
        let pts = self.pts.context("connected")?;
        let now = Instant::now();
        let sent_ns = self.ctl.ns(now);
        let (len, head, time) = if kind == VIDEO {
            let time = MediaTime::new(u64::from(seq) * 3000, Frequency::NINETY_KHZ);
            (VIDEO_FRAME_BYTES, 1, time)
        } else {
            let time = MediaTime::new(u64::from(seq) * 960, Frequency::FORTY_EIGHT_KHZ);
            (AUDIO_FRAME_BYTES, 0, time)
        };
        let mut payload = self.noise[..len].to_vec();
        if kind == VIDEO {
            // VP8's inverse keyframe flag.
            payload[0] = u8::from(!std::mem::take(&mut self.keyframe_due));
        }
        payload[head..head + 4].copy_from_slice(&seq.to_le_bytes());
        payload[head + 4..head + 12].copy_from_slice(&sent_ns.to_le_bytes());
        let writer = self.rtc.writer(self.mids[kind]).context("a line to send on")?;
        writer.write(pts[kind], now, time, payload)?;
        if self.ctl.in_window(sent_ns) {
            self.tally.sent[kind] += 1;
        }
        self.drain()
    }
}

/// CPU time so far of this process's threads whose names start with one of `prefixes`, summed by name,
/// from the scheduler's nanosecond counters.
fn thread_cpu(prefixes: &[&str]) -> Vec<(String, Duration)> {
    let mut out: Vec<(String, Duration)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let name = name.trim().to_owned();
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let Some(ns) = schedstat_ns(&path) else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += Duration::from_nanos(ns),
            None => out.push((name, Duration::from_nanos(ns))),
        }
    }
    out
}

fn schedstat_ns(task: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|t| schedstat_ns(&t.path()))
        .map(Duration::from_nanos)
        .sum()
}

/// Bytes in every file under `dir`.
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    if !dir.exists() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

struct Report {
    calls: usize,
    measure: Duration,
    floor: Run,
    direct: Run,
    sfu: Run,
    /// Time datagrams spent in the SFU during the window, as its driver measures it.
    sfu_delays: DelayHistogram,
    recorded_bytes: u64,
    recorder_dropped: u64,
    writer: Throughput,
}

impl Report {
    /// Prints the table and returns whether every target was met.
    fn print(mut self) -> bool {
        let secs = |run: &Run| run.window.as_secs_f64();
        let floor_pps = self.floor.forwarded as f64 / secs(&self.floor);
        let sfu_pps = self.sfu.forwarded as f64 / secs(&self.sfu);
        let floor_cpu = self.floor.cpu_of("floor-relay");
        let sfu_thread = self.sfu.cpu_of("sfu");
        let recorder_thread = self.sfu.cpu_of("confide-recorde");
        let sync_threads = self.sfu.cpu_of("confide-segmen");
        let sfu_cpu = sfu_thread + recorder_thread + sync_threads;
        let per_core = |pps: f64, cpu: Duration, run: &Run| pps / (cpu.as_secs_f64() / secs(run)).max(1e-9);
        let floor_per_core = per_core(floor_pps, floor_cpu, &self.floor);
        let sfu_per_core = per_core(sfu_pps, sfu_cpu, &self.sfu);
        let pct = |cpu: Duration, run: &Run| 100.0 * cpu.as_secs_f64() / secs(run);
        let (f50, f99) = (
            self.floor.tally.percentile_ms(0.5),
            self.floor.tally.percentile_ms(0.99),
        );
        let (s50, s99) = (
            self.sfu.tally.percentile_ms(0.5),
            self.sfu.tally.percentile_ms(0.99),
        );
        let floor_loss =
            1.0 - self.floor.tally.received_packets as f64 / (self.floor.tally.sent_packets.max(1)) as f64;
        let sfu_loss = self.sfu.tally.frame_loss();
        let (d50, d99) = (
            self.direct.tally.percentile_ms(0.5),
            self.direct.tally.percentile_ms(0.99),
        );
        let direct_loss = self.direct.tally.frame_loss();

        println!(
            "{:<34} {:>14} {:>14} {:>14}",
            "", "floor (relay)", "direct calls", "sfu + recorder"
        );
        let row = |label: &str, floor: String, direct: String, sfu: String| {
            println!("{label:<34} {floor:>14} {direct:>14} {sfu:>14}")
        };
        let sent = |run: &Run| (run.tally.sent[0] + run.tally.sent[1]).to_string();
        row(
            "calls",
            self.calls.to_string(),
            self.calls.to_string(),
            self.calls.to_string(),
        );
        row(
            "frames sent in window (a+v)",
            sent(&self.floor),
            sent(&self.direct),
            sent(&self.sfu),
        );
        row(
            "frames skipped by clients",
            self.floor.tally.skipped.to_string(),
            self.direct.tally.skipped.to_string(),
            self.sfu.tally.skipped.to_string(),
        );
        row(
            "clients whose connection failed",
            "-".into(),
            self.direct.tally.failed.to_string(),
            self.sfu.tally.failed.to_string(),
        );
        row(
            "forwarded packets/s",
            format!("{floor_pps:.0}"),
            "-".into(),
            format!("{sfu_pps:.0}"),
        );
        row(
            "forwarder CPU % (of one core)",
            format!("{:.1}", pct(floor_cpu, &self.floor)),
            "-".into(),
            format!("{:.1}", pct(sfu_cpu, &self.sfu)),
        );
        row(
            "  of which SFU / recorder / syncs",
            "-".into(),
            "-".into(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                pct(sfu_thread, &self.sfu),
                pct(recorder_thread, &self.sfu),
                pct(sync_threads, &self.sfu)
            ),
        );
        let clients = |run: &Run| format!("{:.1}", pct(run.cpu_of("bench-clients"), run));
        row(
            "client thread CPU %",
            clients(&self.floor),
            clients(&self.direct),
            clients(&self.sfu),
        );
        let process = |run: &Run| format!("{:.1}", pct(run.process_cpu, run));
        row(
            "process CPU % (all threads)",
            process(&self.floor),
            process(&self.direct),
            process(&self.sfu),
        );
        row(
            "forwarded packets/s per core",
            format!("{floor_per_core:.0}"),
            "-".into(),
            format!("{sfu_per_core:.0}"),
        );
        row(
            "latency p50 ms",
            format!("{f50:.3}"),
            format!("{d50:.3}"),
            format!("{s50:.3}"),
        );
        row(
            "latency p99 ms",
            format!("{f99:.3}"),
            format!("{d99:.3}"),
            format!("{s99:.3}"),
        );
        row(
            "loss % (floor packets, others frames)",
            format!("{:.3}", 100.0 * floor_loss),
            format!("{:.3}", 100.0 * direct_loss),
            format!("{:.3}", 100.0 * sfu_loss),
        );
        let (added50, added99) = (s50 - d50, s99 - d99);
        println!("added forwarding latency (sfu − direct calls): p50 {added50:.3} ms, p99 {added99:.3} ms");
        println!(
            "  for comparison, sfu − relay floor (which counts the clients' own str0m work as the SFU's): \
             p50 {:.3} ms, p99 {:.3} ms",
            s50 - f50,
            s99 - f99
        );
        let in_sfu = |q: f64| match self.sfu_delays.quantile(q) {
            Some(d) => format!("{:.2}", d.as_secs_f64() * 1000.0),
            None if self.sfu_delays.count() == 0 => "-".into(),
            None => "> 100".into(),
        };
        println!(
            "time in the SFU (a datagram's arrival at its socket, by the kernel's timestamp, to the end of the \
             send of what it made), {} datagrams: p50 {} ms, p99 {} ms, p99.9 {} ms",
            self.sfu_delays.count(),
            in_sfu(0.5),
            in_sfu(0.99),
            in_sfu(0.999)
        );
        println!(
            "ratio sfu / floor: forwarded packets/s {:.3}, per core {:.3}",
            sfu_pps / floor_pps,
            sfu_per_core / floor_per_core
        );
        let recorded_mbs = self.recorded_bytes as f64 / 1e6;
        println!(
            "recorder: {recorded_mbs:.1} MB of segments written in {:.1} s of calls, {} frames dropped",
            self.measure.as_secs_f64(),
            self.recorder_dropped
        );

        let w = &self.writer;
        let raw = w.mb_per_s(w.raw_aes_gcm);
        println!(
            "recording writer ({} MiB of {}-byte frames, best of {WRITER_ROUNDS}): raw AES-256-GCM {raw:.0} MB/s",
            WRITER_MIB,
            throughput::FRAME_LEN
        );
        for (label, time) in [
            ("writer, CPU only", w.writer_cpu),
            ("writer to file, no sync", w.writer_unsynced),
            ("writer to file, synced per chunk", w.writer_synced),
        ] {
            println!(
                "  {label:<34} {:>8.0} MB/s  {:5.1}% of raw",
                w.mb_per_s(time),
                100.0 * w.ratio(time)
            );
        }
        let checks = [
            (
                format!("≥ {TARGET_PER_CORE:.0} forwarded packets/s per core with recording on"),
                sfu_per_core >= TARGET_PER_CORE,
            ),
            (
                format!("p99 added latency < {TARGET_ADDED_P99_MS} ms"),
                added99 < TARGET_ADDED_P99_MS,
            ),
            (
                format!("≥ {TARGET_CALLS} concurrent recorded calls without loss"),
                self.calls as u64 >= TARGET_CALLS
                    && sfu_loss == 0.0
                    && self.sfu.tally.failed == 0
                    && self.recorder_dropped == 0,
            ),
            (
                format!(
                    "writer (CPU only) ≥ {:.0}% of raw AES-256-GCM",
                    100.0 * TARGET_WRITER_RATIO
                ),
                w.ratio(w.writer_cpu) >= TARGET_WRITER_RATIO,
            ),
        ];
        let mut passed = true;
        for (target, met) in checks {
            println!("target {target}: {}", if met { "met" } else { "not met" });
            passed &= met;
        }
        passed
    }
}
