//! Crash safety of the engine with real processes: a child runs three `MlsClient`s on RedbStore
//! files through a stream of sends and self-updates, delivering through the durable outboxes;
//! the parent SIGKILLs it at random moments, many times. After the last kill an uninterrupted
//! child re-sends what is pending and checks convergence; the parent checks that no message was
//! lost and none was delivered twice.
//!
//! Output protocol of the child (one line each, `;` terminated so torn lines are ignored):
//! `sent <member> <message id>;` after `send` returned (committed), and
//! `delivered <member> <delivery id> <message id>;` for each message handed to the "app"
//! before it is acknowledged (so a kill in between shows the same delivery id again).
//!
//! `harness = false`: `main` is the parent unless the first argument names a child mode.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::needless_range_loop
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use core_identity::IdentityStore;
use core_mls::{Event, GroupId, MlsClient, MlsConfig, Output};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spacepanda_core::{Clock, RedbStore, SharedStore, SystemClock};

const MEMBERS: [&str; 3] = ["alice", "bob", "carol"];
const KILLS: u64 = 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("setup") => setup(Path::new(&args[2])),
        Some("run") => run(Path::new(&args[2]), args[3].parse().unwrap(), None),
        Some("finish") => run(Path::new(&args[2]), 0, Some(0)),
        Some("--list") => println!("engine_crash: test"),
        _ => parent(),
    }
}

struct Device {
    client: MlsClient,
    address: core_mls::DeviceAddress,
}

fn open(dir: &Path, name: &str, create: bool) -> Device {
    let store: SharedStore = Arc::new(RedbStore::open(dir.join(format!("{name}.redb"))).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let identities = IdentityStore::new(store.clone(), clock.clone());
    let identity = if create {
        identities.create(name).unwrap()
    } else {
        identities.load().unwrap().unwrap()
    };
    let address = core_mls::DeviceAddress {
        user_id: identity.user_id(),
        device_id: identity.device_id(),
    };
    let client = MlsClient::open(store, clock, identity, MlsConfig::default()).unwrap();
    Device { client, address }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line};").unwrap();
    out.flush().unwrap();
}

fn group_file(dir: &Path) -> PathBuf {
    dir.join("group_id")
}

/// Creates the three devices and the group, delivering everything (not killed).
fn setup(dir: &Path) {
    let mut devices: Vec<Device> = MEMBERS.iter().map(|n| open(dir, n, true)).collect();
    let group = devices[0].client.create_group().unwrap();
    let mut packages = Vec::new();
    for device in devices.iter().skip(1) {
        let package = device
            .client
            .publishable_key_packages()
            .unwrap()
            .into_iter()
            .find(|p| !p.last_resort)
            .unwrap();
        packages.push(package.key_package);
    }
    devices[0].client.add_members(&group, &packages).unwrap();
    flush(&mut devices);
    std::fs::write(group_file(dir), group.as_slice()).unwrap();
}

/// Delivers every device's pending outbound to its recipients, acknowledging each entry only
/// after every recipient processed it, until nothing is pending.
fn flush(devices: &mut [Device]) {
    loop {
        let mut any = false;
        for sender in 0..devices.len() {
            for outbound in devices[sender].client.pending_outbound().unwrap() {
                any = true;
                let bytes = outbound.envelope.to_bytes();
                for to in &outbound.to.devices {
                    let Some(receiver) = devices.iter().position(|d| d.address == *to) else {
                        continue;
                    };
                    let output = match devices[receiver].client.handle_envelope(&bytes) {
                        Ok(output) => output,
                        Err(error) => panic!("{} rejected an envelope: {error}", MEMBERS[receiver]),
                    };
                    app_receives(&mut devices[receiver], receiver, output);
                }
                devices[sender].client.ack_sent(outbound.id).unwrap();
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
                hex::encode(message_id)
            ));
            device.client.ack_delivered(delivery).unwrap();
        }
    }
}

fn run(dir: &Path, seed: u64, finish: Option<u64>) {
    let group = GroupId::from_slice(&std::fs::read(group_file(dir)).unwrap());
    let mut devices: Vec<Device> = MEMBERS.iter().map(|n| open(dir, n, false)).collect();
    // Whatever the last run left undone: messages not yet handed to the app, envelopes not yet
    // delivered.
    for index in 0..devices.len() {
        let pending = devices[index].client.pending_delivered().unwrap();
        app_receives(
            &mut devices[index],
            index,
            Output {
                events: pending,
                ..Output::default()
            },
        );
    }
    flush(&mut devices);
    say("ready");
    if finish.is_some() {
        let states: Vec<(u64, Vec<u8>)> = devices
            .iter()
            .map(|d| {
                (
                    d.client.epoch(&group).unwrap(),
                    d.client.epoch_authenticator(&group).unwrap(),
                )
            })
            .collect();
        assert!(
            states.windows(2).all(|w| w[0] == w[1]),
            "members diverged after the crashes: {states:?}"
        );
        for device in &devices {
            assert!(device.client.pending_outbound().unwrap().is_empty());
        }
        say(&format!("converged {}", states[0].0));
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let actor = rng.gen_range(0..devices.len());
        if rng.gen_bool(0.8) {
            let output = devices[actor]
                .client
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
            say(&format!("sent {actor} {}", hex::encode(id)));
        } else {
            devices[actor].client.self_update(&group).unwrap();
        }
        flush(&mut devices);
    }
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let status = Command::new(&exe)
        .arg("setup")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "setup failed");
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen());
    let mut rng = StdRng::seed_from_u64(seed);
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
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready;" {
                    let _ = ready_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        // Kill during the stream of operations, not during start-up (which can be slow on a
        // loaded machine).
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child never became ready");
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..150)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child stopped by itself ({status}); seed {seed}"
        );
        lines.extend(reader.join().unwrap());
    }
    let output = Command::new(&exe)
        .arg("finish")
        .arg(dir.path())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "final run failed; replay with CRASH_SEED={seed}"
    );
    lines.extend(
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned),
    );

    // Parse complete lines only (a kill can tear the last one).
    let mut sent: Vec<(usize, String)> = Vec::new();
    let mut deliveries: BTreeMap<(usize, String), BTreeSet<u64>> = BTreeMap::new();
    let mut converged = false;
    for line in &lines {
        let Some(line) = line.strip_suffix(';') else {
            continue;
        };
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["sent", member, id] => sent.push((member.parse().unwrap(), (*id).to_owned())),
            ["delivered", member, delivery, id] => {
                deliveries
                    .entry((member.parse().unwrap(), (*id).to_owned()))
                    .or_default()
                    .insert(delivery.parse().unwrap());
            }
            ["converged", _] => converged = true,
            ["ready"] => {}
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
    for (sender, id) in &sent {
        for member in 0..MEMBERS.len() {
            if member == *sender {
                continue;
            }
            let copies = deliveries
                .get(&(member, id.clone()))
                .map_or(0, BTreeSet::len);
            assert!(
                copies >= 1,
                "message {id} from {} was lost for {}; seed {seed}",
                MEMBERS[*sender],
                MEMBERS[member]
            );
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
        "engine_crash: {KILLS} SIGKILLs, {} messages sent, every one delivered exactly once to each other member (seed {seed})",
        sent.len()
    );
    println!("test result: ok. 1 passed; 0 failed");
}
