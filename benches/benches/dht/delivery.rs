//! `dht/deliver_100` and `dht/mailbox_100`: whole devices (`core_dht::Node`) on loopback
//! TCP (see docs/BENCHMARKS.md, "Delivery between running devices").

use super::*;

#[path = "mailbox.rs"]
mod mailbox;
use mailbox::{Mailbox, start_mailbox};

/// The one seed of the delivery benchmarks (serve node keys, device identities and node keys).
const DELIVERY_SEED: u64 = 0xde_11_7e_5d;
/// Serve nodes holding mailboxes, in both delivery networks.
const SERVES: usize = 5;
/// Members of the group of `deliver_100`, the sender included.
const MEMBERS: usize = 100;
/// Messages sent to the offline device in each round of `mailbox_100`.
const MAILBOX_MESSAGES: usize = 100;
/// Every application message is this long (as `encrypt_1k` in group `mls`).
const BODY_LEN: usize = 1024;
const PASSPHRASE: &[u8] = b"benchmark passphrase";
/// Bound on every wait of the delivery benchmarks (a miss aborts the bench).
const BOUND: Duration = Duration::from_secs(60);
/// How often an outbox is polled while waiting for it to empty (`Node::undelivered` reads and
/// decodes every pending entry under the engine's lock): after each `deliver_100` message
/// (one entry, not timed), and while 100 entries are deposited (timed, so less often).
const POLL: Duration = Duration::from_millis(5);
const DEPOSIT_POLL: Duration = Duration::from_millis(25);
/// Devices of `deliver_100` opened (and publishing) at once during setup.
const OPEN_AT_ONCE: usize = 4;
/// Users one invite commit adds while the group is built (`Node::invite_all`).
const INVITE_BATCH: usize = 33;

/// Clock ticks of `/proc` (USER_HZ, 100 on Linux).
const TICK: Duration = Duration::from_millis(10);

/// CPU used so far, from `/proc` in 10 ms ticks (Linux; zero elsewhere): by this process
/// (user + system, every thread; every node of a delivery network runs in it), and by the
/// whole machine (busy, not idle or waiting for I/O).
#[derive(Clone, Copy)]
struct Cpu {
    process: Duration,
    machine: Duration,
}

/// CPU used over a span: by this process, and by everything else on the machine.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    process: Duration,
    others: Duration,
}

fn proc_ticks(path: &str, after: impl Fn(&str) -> Option<&str>, fields: &[usize]) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            let values: Vec<&str> = after(&text)?.split_whitespace().collect();
            fields
                .iter()
                .map(|&i| values.get(i)?.parse::<u64>().ok())
                .sum::<Option<u64>>()
        })
        .unwrap_or(0)
}

/// Waits until this process stays under a tenth of one core for half a second (bounded by
/// [`BOUND`]); returns how long that took.
async fn settle() -> Duration {
    const WINDOW: Duration = Duration::from_millis(500);
    let started = Instant::now();
    while started.elapsed() < BOUND {
        let before = Cpu::now();
        tokio::time::sleep(WINDOW).await;
        if Cpu::now().since(before).process < WINDOW / 10 {
            break;
        }
    }
    started.elapsed()
}

impl Cpu {
    fn now() -> Self {
        // /proc/self/stat after the command name: utime and stime are the 12th and 13th fields.
        let process = proc_ticks(
            "/proc/self/stat",
            |text| Some(text.rsplit_once(')')?.1),
            &[11, 12],
        );
        // /proc/stat's first line: cpu user nice system idle iowait irq softirq steal.
        let machine = proc_ticks(
            "/proc/stat",
            |text| text.lines().next()?.strip_prefix("cpu "),
            &[0, 1, 2, 5, 6, 7],
        );
        Self {
            process: TICK * u32::try_from(process).unwrap_or(u32::MAX),
            machine: TICK * u32::try_from(machine).unwrap_or(u32::MAX),
        }
    }

    fn since(self, earlier: Self) -> CpuUse {
        let process = self.process.saturating_sub(earlier.process);
        CpuUse {
            process,
            others: self
                .machine
                .saturating_sub(earlier.machine)
                .saturating_sub(process),
        }
    }
}

fn tcp() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("tcp address")
}

/// The network settings of every node of the delivery benchmarks: the defaults, with nothing
/// periodic inside the bench's few minutes (no re-put of every record, no mailbox hand-over).
fn delivery_dht_config() -> DhtConfig {
    DhtConfig {
        replication_interval: Duration::from_secs(3600),
        handoff_interval: Duration::from_secs(3600),
        ..DhtConfig::default()
    }
}

/// A device's settings: cheap Argon2 (tests and benchmarks only), no periodic fetch or
/// maintenance during the measurement (each also runs once at open), short retries, and user
/// records trusted for routing for the whole bench (the sender's cache stays warm).
fn node_config(name: &str, bootstrap: &[Multiaddr]) -> NodeConfig {
    NodeConfig {
        display_name: Some(name.to_owned()),
        listen: vec![tcp()],
        bootstrap: bootstrap.to_vec(),
        dht: delivery_dht_config(),
        kdf: KdfParams::INSECURE_FOR_TESTS,
        fetch_interval: Duration::from_secs(600),
        maintenance_interval: Duration::from_secs(600),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_secs(1),
        user_cache: Duration::from_secs(600),
        ..NodeConfig::new()
    }
}

/// A serve node: a network node holding mailboxes in its own redb file, no device.
struct Serve {
    dht: DhtHandle,
    address: Multiaddr,
}

impl Serve {
    /// The address devices join through (`…/p2p/<peer id>`).
    fn dial(&self) -> Multiaddr {
        self.address.clone().with(Protocol::P2p(self.dht.peer_id()))
    }
}

/// [`SERVES`] serve nodes, each joined through the first, then bootstrapped once more.
async fn start_serves(rng: &mut ChaCha20Rng, dir: &Path) -> Vec<Serve> {
    let mut serves: Vec<Serve> = Vec::with_capacity(SERVES);
    for i in 0..SERVES {
        let store =
            Arc::new(RedbStore::create(dir.join(format!("serve-{i}.redb"))).expect("serve store"));
        let dht =
            DhtHandle::spawn_with_mailboxes(&keypair(rng), delivery_dht_config(), clock(), store)
                .expect("serve node starts");
        let address = dht.listen(tcp()).await.expect("listens on loopback");
        if let Some(first) = serves.first() {
            dht.add_peer(first.dht.peer_id(), first.address.clone())
                .await
                .expect("dial the first serve node");
            dht.bootstrap()
                .await
                .expect("bootstrap through the first serve node");
        }
        serves.push(Serve { dht, address });
    }
    for serve in serves.iter().skip(1) {
        let _ = serve.dht.bootstrap().await;
    }
    serves
}

/// Creates a device's sealed store in `dir` with a seeded identity and node key. `Node::open`
/// then finds them, where it would otherwise draw them from the OS (its engine still does).
fn seed_device(dir: &Path, name: &str, rng: &mut ChaCha20Rng) {
    std::fs::create_dir_all(dir).expect("data directory");
    let file = RedbStore::create(dir.join(DEVICE_FILE)).expect("device file");
    let store: SharedStore = Arc::new(
        SealedStore::create_with_passphrase(file, PASSPHRASE, KdfParams::INSECURE_FOR_TESTS)
            .expect("sealed store"),
    );
    IdentityStore::new(store.clone(), clock())
        .create_with(name, rng)
        .expect("identity");
    load_or_create_node_keypair(&store, || keypair(rng)).expect("node key");
}

/// What a device's event pump reports, with the device's index.
#[derive(Debug)]
enum Seen {
    Joined(GroupId),
    /// A message, and when its event was taken from the node's event stream.
    Message(MessageId, Instant),
    Delayed(String),
}

type SeenSender = mpsc::UnboundedSender<(usize, Seen)>;
type SeenReceiver = mpsc::UnboundedReceiver<(usize, Seen)>;

/// A running device and the task that reads its events like an application: each message is
/// timestamped when taken, then acknowledged (`ack_delivered`, as an app that stored it), then
/// reported (so once the bench has every report, every message was acknowledged).
struct RunningDevice {
    node: Arc<DeviceNode>,
    pump: JoinHandle<()>,
}

async fn open_device(
    dir: &Path,
    config: NodeConfig,
    index: usize,
    seen: SeenSender,
) -> RunningDevice {
    let node = Arc::new(
        DeviceNode::open(dir, PASSPHRASE, config)
            .await
            .unwrap_or_else(|e| panic!("device {index} opens: {e}")),
    );
    let mut events = node.take_events().expect("events taken once");
    let acks = node.clone();
    let pump = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            // Everything that is there is taken at once (one timestamp), then acknowledged one
            // by one: an acknowledgement is a store transaction, and the time a message was
            // available must not include the acknowledgements of the ones before it.
            let at = Instant::now();
            let mut taken = vec![event];
            while let Ok(event) = events.try_recv() {
                taken.push(event);
            }
            for event in taken {
                let report = match event {
                    NodeEvent::Engine(event) => match *event {
                        Event::Message {
                            message_id,
                            delivery,
                            ..
                        } => {
                            if let Err(e) = acks.ack_delivered(delivery).await {
                                eprintln!("dht: device {index}: ack_delivered failed: {e}");
                            }
                            Seen::Message(message_id, at)
                        }
                        Event::Joined { group, .. } => Seen::Joined(group),
                        _ => continue,
                    },
                    NodeEvent::DeliveryDelayed { reason, .. } => Seen::Delayed(reason),
                    _ => continue,
                };
                if seen.send((index, report)).is_err() {
                    return;
                }
            }
        }
    });
    RunningDevice { node, pump }
}

impl RunningDevice {
    /// Stops the node and its pump; what is not delivered stays in its data directory.
    async fn close(self) {
        self.node.shutdown().await;
        self.pump.abort();
        let _ = self.pump.await;
    }
}

/// Waits until `node`'s outbox is empty (everything pushed or deposited), polling every
/// `poll`. Returns the time spent in the polls themselves.
async fn flushed(node: &DeviceNode, poll: Duration) -> Duration {
    let start = Instant::now();
    let mut polling = Duration::ZERO;
    loop {
        let asked = Instant::now();
        let pending = node.undelivered().await.expect("outbox readable");
        polling += asked.elapsed();
        if pending == 0 {
            return polling;
        }
        assert!(
            start.elapsed() < BOUND,
            "an outbox was not empty after {BOUND:?}"
        );
        tokio::time::sleep(poll).await;
    }
}

/// A 1 KiB body, different for every `n`.
fn body(n: u64) -> Vec<u8> {
    let mut body = n.to_le_bytes().to_vec();
    body.resize(BODY_LEN, b'.');
    body
}

fn log_delayed(index: usize, reason: &str) {
    eprintln!("dht: device {index}: delivery delayed: {reason}");
}

/// Where one message's time went in `deliver_100`, from the call to `send`.
struct DeliverPhases {
    /// `send` returned: encrypted, in the durable outbox.
    sent: Duration,
    /// The first, median and last of the 99 members took the message from its event stream.
    first: Duration,
    median: Duration,
    last: Duration,
    /// The sender's outbox was empty again (every push answered "delivered"), 5 ms polling.
    flushed: Duration,
    /// CPU used from the call to `send` until the sender's outbox was empty.
    cpu: CpuUse,
}

/// `deliver_100`: five serve nodes and [`MEMBERS`] devices, all in one group; device 0 sends.
struct Delivery {
    _dir: TempDir,
    serves: Vec<Serve>,
    devices: Vec<RunningDevice>,
    group: GroupId,
    seen: SeenReceiver,
    phases: Vec<DeliverPhases>,
    sent: u64,
}

async fn start_delivery(rng: &mut ChaCha20Rng) -> Delivery {
    eprintln!(
        "dht: load average {} before the delivery network",
        load_average()
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let started = Instant::now();
    let serves = start_serves(rng, dir.path()).await;
    let bootstrap: Vec<Multiaddr> = serves.iter().map(Serve::dial).collect();
    let (tx, mut seen) = mpsc::unbounded_channel();
    let mut devices = Vec::with_capacity(MEMBERS);
    let mut unpublished = 0;
    for first in (0..MEMBERS).step_by(OPEN_AT_ONCE) {
        let mut opening = Vec::with_capacity(OPEN_AT_ONCE);
        for i in first..(first + OPEN_AT_ONCE).min(MEMBERS) {
            let name = format!("member{i}");
            let path = dir.path().join(&name);
            seed_device(&path, &name, rng);
            let config = node_config(&name, &bootstrap);
            let seen = tx.clone();
            opening.push(tokio::spawn(async move {
                let device = open_device(&path, config, i, seen).await;
                let published = device.node.publish().await;
                (device, published)
            }));
        }
        for task in opening {
            let (device, published) = task.await.expect("a device opens");
            if let Err(e) = published {
                unpublished += 1;
                eprintln!("dht/deliver_100: a device could not publish at first: {e}");
            }
            devices.push(device);
        }
    }
    for device in &devices {
        let _ = device.node.dht().bootstrap().await;
    }
    let mut routing = Vec::with_capacity(MEMBERS);
    for device in &devices {
        routing.push(
            device
                .node
                .dht()
                .status()
                .await
                .expect("status")
                .routing_peers,
        );
    }
    eprintln!(
        "dht/deliver_100: {SERVES} serve nodes and {MEMBERS} devices up and published in \
         {:.1} s ({unpublished} first publications failed); routing table sizes min {} / \
         median {} / max {}",
        started.elapsed().as_secs_f64(),
        routing.iter().min().unwrap(),
        percentile(&mut routing.clone(), 0.5),
        routing.iter().max().unwrap(),
    );

    // Device 0 invites the others by address in commits of INVITE_BATCH users
    // (`Node::invite_all`); the sender's outbox empties before the next.
    let started = Instant::now();
    let sender = &devices[0].node;
    let group = sender.create_group().await.expect("group created");
    let mut invite_times = Vec::new();
    let addresses: Vec<String> = devices
        .iter()
        .skip(1)
        .map(|device| device.node.device().address().to_string())
        .collect();
    for (batch, chunk) in addresses.chunks(INVITE_BATCH).enumerate() {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let invited = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match sender.invite_all(&group, &chunk).await {
                Ok(invitation) => {
                    assert_eq!(invitation.added.len(), chunk.len(), "one device per member");
                    break;
                }
                Err(e) if attempt < 5 => {
                    eprintln!("dht/deliver_100: invite batch {batch} failed ({e}); again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("invite batch {batch} could not be made: {e}"),
            }
        }
        flushed(sender, POLL).await;
        invite_times.push(invited.elapsed());
    }
    let mut joined = [false; MEMBERS];
    joined[0] = true;
    let deadline = tokio::time::Instant::now() + BOUND;
    while joined.iter().any(|j| !j) {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some((i, Seen::Joined(g)))) if g == group => joined[i] = true,
            Ok(Some((i, Seen::Delayed(reason)))) => log_delayed(i, &reason),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!(
                "only {} of {MEMBERS} devices joined",
                joined.iter().filter(|j| **j).count()
            ),
        }
    }
    for device in &devices {
        flushed(&device.node, POLL).await;
    }
    eprintln!(
        "dht/deliver_100: group of {MEMBERS} built in {:.1} s ({} invite commits, each until \
         the sender's outbox was empty: first {:.0} ms, median {:.0} ms, last {:.0} ms); every \
         device joined and every outbox is empty",
        started.elapsed().as_secs_f64(),
        invite_times.len(),
        ms(invite_times[0]),
        ms(percentile(&mut invite_times.clone(), 0.5)),
        ms(*invite_times.last().unwrap()),
    );
    // Every member that joined republishes its key packages (one was used) and syncs
    // claims in the background: let that finish before anything is timed.
    let quiet = settle().await;
    eprintln!(
        "dht/deliver_100: background work settled after {:.1} s",
        quiet.as_secs_f64()
    );
    Delivery {
        _dir: dir,
        serves,
        devices,
        group,
        seen,
        phases: Vec::new(),
        sent: 0,
    }
}

impl Delivery {
    /// One message from device 0 to the group: the time from the call to `send` until the
    /// last of the 99 members took it from its event stream. Not timed: the wait for the
    /// sender's outbox to empty before the next message.
    async fn deliver(&mut self) -> Duration {
        while self.seen.try_recv().is_ok() {}
        self.sent += 1;
        let body = body(self.sent);
        let sender = &self.devices[0].node;
        let cpu = Cpu::now();
        let start = Instant::now();
        let id = sender.send(&self.group, &body).await.expect("send");
        let sent = start.elapsed();
        let mut arrived: Vec<Option<Duration>> = vec![None; MEMBERS];
        let mut count = 0;
        let deadline = tokio::time::Instant::now() + BOUND;
        while count < MEMBERS - 1 {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some((i, Seen::Message(m, at)))) if m == id && i > 0 && arrived[i].is_none() => {
                    arrived[i] = Some(at.saturating_duration_since(start));
                    count += 1;
                }
                Ok(Some((i, Seen::Delayed(reason)))) => log_delayed(i, &reason),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!(
                    "only {count} of {} members got message {} within {BOUND:?}",
                    MEMBERS - 1,
                    self.sent
                ),
            }
        }
        let mut times: Vec<Duration> = arrived.into_iter().flatten().collect();
        times.sort_unstable();
        let last = *times.last().unwrap();
        flushed(sender, POLL).await;
        self.phases.push(DeliverPhases {
            sent,
            first: times[0],
            median: times[times.len() / 2],
            last,
            flushed: start.elapsed(),
            cpu: Cpu::now().since(cpu),
        });
        last
    }

    fn report(&self) {
        if self.phases.is_empty() {
            return;
        }
        let mean = |f: fn(&DeliverPhases) -> Duration| {
            ms(self.phases.iter().map(f).sum::<Duration>() / self.phases.len() as u32)
        };
        let mut lasts: Vec<Duration> = self.phases.iter().map(|p| p.last).collect();
        eprintln!(
            "dht/deliver_100/tcp: {} messages (warm-up included), means from the call to send: \
             send returned {:.1} ms, first member {:.1} ms, median member {:.1} ms, last member \
             {:.1} ms, sender's outbox empty {:.1} ms; CPU per message until then: this process \
             {:.0} ms, other processes {:.0} ms (of the 2 cores' {:.0} ms); last member {}",
            self.phases.len(),
            mean(|p| p.sent),
            mean(|p| p.first),
            mean(|p| p.median),
            mean(|p| p.last),
            mean(|p| p.flushed),
            mean(|p| p.cpu.process),
            mean(|p| p.cpu.others),
            2.0 * mean(|p| p.flushed),
            summary(&mut lasts),
        );
    }

    async fn shutdown(self) {
        for device in self.devices {
            device.close().await;
        }
        for serve in &self.serves {
            serve.dht.shutdown().await;
        }
    }
}

pub(super) fn delivery(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut rng = ChaCha20Rng::seed_from_u64(DELIVERY_SEED);
    // Each network is built by the first benchmark criterion's filter selects of it.
    let mut deliver: Option<Delivery> = None;
    let mut mailbox: Option<Mailbox> = None;

    let mut group = c.benchmark_group("dht");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.bench_function(BenchmarkId::new("deliver_100", "tcp"), |b| {
        let network = deliver.get_or_insert_with(|| rt.block_on(start_delivery(&mut rng)));
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += network.deliver().await;
                }
                total
            })
        });
    });
    if let Some(network) = deliver.take() {
        network.report();
        rt.block_on(network.shutdown());
    }

    // A round takes seconds: one warm-up round, then one round per sample (criterion's flat
    // sampling runs measurement_time / (10 × the warm-up's time) rounds per sample, at least 1).
    group
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function(BenchmarkId::new("mailbox_100", "deposit"), |b| {
        let network = mailbox.get_or_insert_with(|| rt.block_on(start_mailbox(&mut rng)));
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += network.round().await.deposit;
                }
                total
            })
        });
    });
    group.bench_function(BenchmarkId::new("mailbox_100", "fetch"), |b| {
        let network = mailbox.get_or_insert_with(|| rt.block_on(start_mailbox(&mut rng)));
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += network.round().await.fetch;
                }
                total
            })
        });
    });
    group.finish();
    if let Some(network) = mailbox.take() {
        network.report();
        rt.block_on(network.shutdown());
    }
}
