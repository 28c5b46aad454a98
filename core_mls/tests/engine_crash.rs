//! Crash safety of the engine with real processes: a child runs four `MlsClient`s on RedbStore
//! files through a stream of sends, self-updates, adds (a commit and a Welcome the new member
//! joins from) and removes, delivering through the durable outboxes; the parent SIGKILLs it
//! right after a line it prints, chosen from the seed, many times — most while the stream runs,
//! every fourth from the spawn on (while a device opens, or while they recover what the last
//! run left undone). After
//! the last kill an uninterrupted child re-sends what is pending and checks convergence. The
//! parent checks that:
//! - no message was lost and none was delivered twice, to exactly the devices that were members
//!   when it was sent;
//! - after every restart each device is where its last printed (committed) transaction left
//!   it, or one transaction further — and at most one device is ahead: the one transaction the
//!   kill interrupted before its line was printed;
//! - every state printed for one epoch has the same epoch authenticator (the group has one
//!   history; a committed epoch that was lost and made again differently would show).
//!
//! Output protocol of the child (one line each, `;` terminated so torn lines are ignored):
//! `opening <name>;` before each device opens; `loaded <member> <state>;` for each device as it
//! opened, before anything runs; `ready;` once the last run's leftovers are recovered;
//! `state <member> <state>;` after an operation of that device, or an envelope it handled,
//! committed; `sent <member> <message id> <recipients>;` after `send` returned (committed),
//! the recipients as comma-separated member indices; `delivered <member> <delivery id>
//! <message id>;` for each message handed to the "app" before it is acknowledged (so a kill in
//! between shows the same delivery id again); `added <member>;` and `removed <member>;` after
//! the commit that adds or removes that device returned. `<state>` is `<epoch> <epoch
//! authenticator hex>`, or `- -` for a device that does not hold the group.
//!
//! `harness = false`: `main` is the parent unless the first argument names a child mode.
//! The seed (`CRASH_SEED`, default fixed) picks the operations and after which printed line each
//! kill comes, and each child's identities and engine seeds; where inside the next operation a
//! kill lands is up to the machine. The devices are the test kit's, on RedbStore files and the
//! system clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::needless_range_loop
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use core_mls::{EnvelopeKind, Event, GroupId, MlsConfig, Output};
use rand::Rng;
use rand::rngs::StdRng;
use spacepanda_core::SystemClock;
use spacepanda_testkit::{Device, Storage, seeded};

/// Alice, bob and carol found the group; dave starts outside it.
const MEMBERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const FOUNDERS: usize = 3;
const KILLS: u64 = 20;
/// Every this many rounds the kill may land before the stream starts.
const ANYTIME_EVERY: u64 = 4;
const SIGKILL: i32 = 9;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("setup") => setup(Path::new(&args[2]), args[3].parse().unwrap()),
        Some("run") => run(Path::new(&args[2]), args[3].parse().unwrap(), false),
        Some("finish") => run(Path::new(&args[2]), args[3].parse().unwrap(), true),
        Some("--list") => println!("engine_crash: test"),
        _ => parent(),
    }
}

/// Salt between a child's seed and the generator of its devices' identities and engine seeds,
/// so that those draws are not the ones that choose its operations.
const ENGINE_SALT: u64 = 0x0E5E_ED00;

/// The generator of one child's identities and engine seeds. Every child has its own seed
/// (setup `!seed`, round `r` `seed ^ r`, the final run `seed ^ KILLS`), so a store reopened
/// after a kill never draws what its previous run drew: a committed epoch that was lost and
/// made again comes out different, which the one-authenticator-per-epoch check would see.
fn engine_rng(child_seed: u64) -> StdRng {
    seeded::rng(child_seed ^ ENGINE_SALT)
}

/// Opens the device `name` from its file in `dir`, as the setup child left it, on the real
/// clock of a real process.
fn open(dir: &Path, name: &str, rng: &mut StdRng) -> Device {
    Device::open_existing(name, dir, &SystemClock, &MlsConfig::default(), rng)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line};").unwrap();
    out.flush().unwrap();
}

/// `<epoch> <authenticator>` of the group on `device`, or `- -` if it does not hold it.
fn state(device: &Device, group: &GroupId) -> String {
    match (
        device.client_ref().epoch(group),
        device.client_ref().epoch_authenticator(group),
    ) {
        (Ok(epoch), Ok(authenticator)) => format!("{epoch} {}", hex::encode(authenticator)),
        _ => "- -".to_owned(),
    }
}

fn say_state(kind: &str, devices: &[Device], index: usize, group: &GroupId) {
    say(&format!("{kind} {index} {}", state(&devices[index], group)));
}

fn group_file(dir: &Path) -> PathBuf {
    dir.join("group_id")
}

/// A key package of `device` for an add: a single-use one while the pool has one.
fn key_package(device: &Device) -> Vec<u8> {
    let mut packages = device.client_ref().publishable_key_packages().unwrap();
    packages.sort_by_key(|p| p.last_resort);
    packages.remove(0).key_package
}

/// Creates the four devices and the founders' group, delivering everything (not killed).
fn setup(dir: &Path, child_seed: u64) {
    let mut rng = engine_rng(child_seed);
    let storage = Storage::files_in(dir);
    let config = MlsConfig::default();
    let mut devices: Vec<Device> = MEMBERS
        .iter()
        .map(|name| Device::create(name, &storage, None, &SystemClock, &config, &mut rng))
        .collect();
    let group = devices[0].client().create_group().unwrap();
    let packages: Vec<Vec<u8>> = devices[1..FOUNDERS].iter().map(key_package).collect();
    devices[0].client().add_members(&group, &packages).unwrap();
    flush(&mut devices, &group);
    std::fs::write(group_file(dir), group.as_slice()).unwrap();
}

/// Delivers every device's pending outbound to its recipients, acknowledging each entry only
/// after every recipient processed it, until nothing is pending.
fn flush(devices: &mut [Device], group: &GroupId) {
    loop {
        let mut any = false;
        for sender in 0..devices.len() {
            for outbound in devices[sender].client_ref().pending_outbound().unwrap() {
                any = true;
                let bytes = outbound.envelope.to_bytes();
                for to in &outbound.to.devices {
                    let Some(receiver) = devices.iter().position(|d| d.address() == *to) else {
                        continue;
                    };
                    let output = match devices[receiver].client().handle_envelope(&bytes) {
                        Ok(output) => output,
                        Err(error) => panic!("{} rejected an envelope: {error}", MEMBERS[receiver]),
                    };
                    say_state("state", devices, receiver, group);
                    app_receives(&mut devices[receiver], receiver, output);
                }
                devices[sender].client().ack_sent(outbound.id).unwrap();
            }
        }
        if !any {
            return;
        }
    }
}

/// The "app": prints each delivered message, then acknowledges it.
fn app_receives(device: &mut Device, index: usize, output: Output) {
    for event in output.events {
        if let Event::Message {
            message_id,
            delivery,
            ..
        } = event
        {
            say(&format!(
                "delivered {index} {} {}",
                delivery.0,
                hex::encode(message_id.as_bytes())
            ));
            device.client().ack_delivered(delivery).unwrap();
        }
    }
}

fn run(dir: &Path, seed: u64, finish: bool) {
    let group = GroupId::from_slice(&std::fs::read(group_file(dir)).unwrap());
    let mut rng = engine_rng(seed);
    let mut devices = Vec::with_capacity(MEMBERS.len());
    for name in MEMBERS {
        // The parent may kill right after this line: during the open and its recovery.
        say(&format!("opening {name}"));
        devices.push(open(dir, name, &mut rng));
    }
    for index in 0..devices.len() {
        say_state("loaded", &devices, index, &group);
    }
    // Whatever the last run left undone: messages not yet handed to the app, envelopes not yet
    // delivered.
    for index in 0..devices.len() {
        let pending = devices[index].client().pending_delivered().unwrap();
        app_receives(
            &mut devices[index],
            index,
            Output {
                events: pending,
                ..Output::default()
            },
        );
    }
    flush(&mut devices, &group);
    say("ready");
    let holds =
        |devices: &[Device], index: usize| devices[index].client_ref().groups().contains(&group);
    if finish {
        let members: Vec<usize> = (0..devices.len()).filter(|&i| holds(&devices, i)).collect();
        assert!(
            members.len() >= 2,
            "the group lost its members: {members:?}"
        );
        let states: Vec<String> = members
            .iter()
            .map(|&i| state(&devices[i], &group))
            .collect();
        assert!(
            states.windows(2).all(|w| w[0] == w[1]),
            "members diverged after the crashes: {states:?}"
        );
        for device in &devices {
            assert!(device.client_ref().pending_outbound().unwrap().is_empty());
        }
        say(&format!("converged {}", states[0]));
        return;
    }
    let mut rng = seeded::rng(seed);
    for op in 0.. {
        // Every operation is followed by a full flush, so all devices see the same membership.
        let (members, outsiders): (Vec<usize>, Vec<usize>) =
            (0..devices.len()).partition(|&i| holds(&devices, i));
        let actor = members[rng.gen_range(0..members.len())];
        // Each run starts with a membership change, so however few operations a run gets
        // through before its kill, adds and removes are among them.
        let roll = if op == 0 { 99 } else { rng.gen_range(0..100) };
        if roll < 75 {
            let output = devices[actor]
                .client()
                .send(&group, format!("m{}", rng.r#gen::<u32>()).as_bytes())
                .unwrap();
            let id = output
                .events
                .iter()
                .find_map(|e| match e {
                    Event::MessageSent { message_id, .. } => Some(*message_id),
                    _ => None,
                })
                .unwrap();
            let recipients: Vec<String> = output
                .outbound
                .iter()
                .filter(|o| o.envelope.kind() == EnvelopeKind::Application)
                .flat_map(|o| &o.to.devices)
                .map(|to| {
                    let index = devices.iter().position(|d| d.address() == *to).unwrap();
                    index.to_string()
                })
                .collect();
            say(&format!(
                "sent {actor} {} {}",
                hex::encode(id.as_bytes()),
                recipients.join(",")
            ));
        } else if roll < 88 {
            devices[actor].client().self_update(&group).unwrap();
        } else if !outsiders.is_empty() && (members.len() <= 2 || rng.gen_bool(0.5)) {
            let target = outsiders[rng.gen_range(0..outsiders.len())];
            let package = key_package(&devices[target]);
            devices[actor]
                .client()
                .add_members(&group, &[package])
                .unwrap();
            say(&format!("added {target}"));
        } else {
            let others: Vec<usize> = members.into_iter().filter(|&m| m != actor).collect();
            let target = others[rng.gen_range(0..others.len())];
            let address = devices[target].address();
            devices[actor]
                .client()
                .remove_device(&group, &address.user_id, &address.device_id)
                .unwrap();
            say(&format!("removed {target}"));
        }
        say_state("state", &devices, actor, &group);
        flush(&mut devices, &group);
    }
}

/// The state lines of every run, checked as they come.
#[derive(Default)]
struct States {
    /// Each device's last printed state.
    last: BTreeMap<usize, (String, String)>,
    /// The one authenticator of each epoch.
    authenticators: BTreeMap<String, String>,
    /// Restarts of a device compared with its last printed state, and how many of them found
    /// it one transaction ahead.
    compared: usize,
    ahead: usize,
}

impl States {
    /// Checks one run's lines: each `loaded` state against the device's last printed one, and
    /// every state against the epoch's authenticator.
    fn check_run(&mut self, lines: &[String], seed: u64, round: &str) {
        let mut ahead = Vec::new();
        for line in lines {
            let Some(line) = line.strip_suffix(';') else {
                continue;
            };
            let words: Vec<&str> = line.split(' ').collect();
            let (kind, member, state) = match words.as_slice() {
                [kind @ ("loaded" | "state"), member, epoch, authenticator] => (
                    *kind,
                    member.parse::<usize>().unwrap(),
                    ((*epoch).to_owned(), (*authenticator).to_owned()),
                ),
                _ => continue,
            };
            if state.0 != "-" {
                let known = self
                    .authenticators
                    .entry(state.0.clone())
                    .or_insert_with(|| state.1.clone());
                assert_eq!(
                    *known, state.1,
                    "{round}: two histories at epoch {} ({} has the second); seed {seed}",
                    state.0, MEMBERS[member]
                );
            }
            let before = self.last.get(&member).filter(|_| kind == "loaded");
            self.compared += usize::from(before.is_some());
            if let Some(before) = before
                && *before != state
            {
                assert!(
                    one_transaction_apart(before, &state),
                    "{round}: {} restarted at {state:?}, last committed {before:?}; seed {seed}",
                    MEMBERS[member]
                );
                ahead.push(MEMBERS[member]);
            }
            self.last.insert(member, state);
        }
        assert!(
            ahead.len() <= 1,
            "{round}: {ahead:?} all restarted past their last printed state: more than one \
             transaction was committed but not printed; seed {seed}"
        );
        self.ahead += ahead.len();
    }
}

/// Whether one committed transaction takes a device from `before` to `after`: a commit (one
/// epoch on), joining from a Welcome, or being removed.
fn one_transaction_apart(before: &(String, String), after: &(String, String)) -> bool {
    match (before.0.parse::<u64>(), after.0.parse::<u64>()) {
        (Ok(before), Ok(after)) => after == before + 1,
        (Err(_), Ok(_)) | (Ok(_), Err(_)) => true,
        (Err(_), Err(_)) => false,
    }
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00C0_FFEE);
    let status = Command::new(&exe)
        .arg("setup")
        .arg(dir.path())
        .arg((!seed).to_string())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "setup failed");
    let mut rng = seeded::rng(seed);
    let mut states = States::default();
    let mut lines = Vec::new();
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .arg("run")
            .arg(dir.path())
            .arg((seed ^ round).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Every line the child prints, as it prints it: the kill comes right after a chosen
        // line, so it lands inside whatever the child does next.
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = line_tx.send(line.clone());
                lines.push(line);
            }
            lines
        });
        let next_line = || {
            line_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the child printed nothing for a minute")
        };
        if round % ANYTIME_EVERY == ANYTIME_EVERY - 1 {
            // Any point from the spawn: opening a store, recovering, or the stream.
            for _ in 0..rng.gen_range(0..12) {
                next_line();
            }
        } else {
            // During the stream of operations, not during start-up, so that most kills test
            // the stream.
            while next_line() != "ready;" {}
            for _ in 0..rng.gen_range(0..150) {
                next_line();
            }
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "round {round}: the child did not die of the kill ({status}); seed {seed}"
        );
        let round_lines = reader.join().unwrap();
        states.check_run(&round_lines, seed, &format!("round {round}"));
        lines.extend(round_lines);
    }
    let output = Command::new(&exe)
        .arg("finish")
        .arg(dir.path())
        .arg((seed ^ KILLS).to_string())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "final run failed; replay with CRASH_SEED={seed}"
    );
    let final_lines: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    states.check_run(&final_lines, seed, "final run");
    lines.extend(final_lines);

    // Parse complete lines only (a kill can tear the last one).
    let mut sent: Vec<(usize, String, BTreeSet<usize>)> = Vec::new();
    let mut deliveries: BTreeMap<(usize, String), BTreeSet<u64>> = BTreeMap::new();
    let (mut added, mut removed) = (0, 0);
    let mut converged = false;
    for line in &lines {
        let Some(line) = line.strip_suffix(';') else {
            continue;
        };
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["sent", member, id, recipients] => sent.push((
                member.parse().unwrap(),
                (*id).to_owned(),
                recipients.split(',').map(|r| r.parse().unwrap()).collect(),
            )),
            ["delivered", member, delivery, id] => {
                deliveries
                    .entry((member.parse().unwrap(), (*id).to_owned()))
                    .or_default()
                    .insert(delivery.parse().unwrap());
            }
            ["added", _] => added += 1,
            ["removed", _] => removed += 1,
            ["converged", _, _] => converged = true,
            ["ready"] | ["opening", _] | ["loaded" | "state", _, _, _] => {}
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert!(
        converged,
        "the final run did not report convergence; seed {seed}"
    );
    assert!(
        sent.len() >= KILLS as usize / 2,
        "only {} messages were sent: the kills came too early to test anything",
        sent.len()
    );
    assert!(
        states.compared >= KILLS as usize,
        "only {} restarts of a device were compared with its last state; seed {seed}",
        states.compared
    );
    assert!(
        added >= 1 && removed >= 1,
        "{added} adds and {removed} removes: the kills came too early to test membership \
         changes; seed {seed}"
    );
    for (sender, id, recipients) in &sent {
        assert!(!recipients.contains(sender), "{id} was sent to its sender");
        for member in 0..MEMBERS.len() {
            let copies = deliveries
                .get(&(member, id.clone()))
                .map_or(0, BTreeSet::len);
            if recipients.contains(&member) {
                assert!(
                    copies >= 1,
                    "message {id} from {} was lost for {}; seed {seed}",
                    MEMBERS[*sender],
                    MEMBERS[member]
                );
            } else {
                assert_eq!(
                    copies, 0,
                    "message {id} from {} reached {}, not a member when it was sent; seed {seed}",
                    MEMBERS[*sender], MEMBERS[member]
                );
            }
        }
    }
    for ((member, id), ids) in &deliveries {
        assert_eq!(
            ids.len(),
            1,
            "message {id} was delivered to {} {} times; seed {seed}",
            MEMBERS[*member],
            ids.len()
        );
    }
    println!(
        "engine_crash: {KILLS} SIGKILLs, {} messages sent, {added} adds and {removed} removes; \
         every message delivered exactly once to each device that was a member when it was \
         sent; {} device restarts each at its last committed state ({} one transaction past \
         its last printed line) (seed {seed})",
        sent.len(),
        states.compared,
        states.ahead
    );
    println!("test result: ok. 1 passed; 0 failed");
}
