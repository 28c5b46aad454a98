//! Crash safety with a real process: a child runs a stream of group operations over RedbStore
//! files, printing each transaction after it commits; the parent SIGKILLs it at random moments,
//! restarts it, and checks that every member's state is one a committed transaction produced.
//! The last child runs the stream to the end and checks that all members agree.
//!
//! The child is resumable: each member's progress marker (the last step it performed or
//! received) and the messages it produced (its outbox) are written in the same transaction as
//! the MLS operation, so after a kill each member knows where it is, and a member that committed
//! an operation can redeliver it to the others.
//!
//! Replay a failure with `CRASH_SEED=<seed printed by the parent>`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{CS, bytes, join_config, parse};
use core_mls::{MlsError, SpacePandaProvider};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use rand::{Rng, SeedableRng, rngs::StdRng};
use spacepanda_core::{Key, RedbStore, SharedStore};
use tls_codec::{Deserialize as _, Serialize as _};

const NAMES: [&str; 3] = ["alice", "bob", "carol"];
const GROUP: &[u8] = b"crash-group";
const PROGRESS: &str = "test_progress";
const OUTBOX: &str = "test_outbox";
const KILLS: usize = 20;

#[derive(Clone, Copy, Debug)]
enum Op {
    Create,
    PublishKeyPackage,
    Add {
        target: usize,
        key_package_step: usize,
    },
    Send,
    Update,
    Remove {
        target: usize,
    },
}

/// The stream: (actor, operation) per step.
fn script() -> Vec<(usize, Op)> {
    let mut steps = vec![
        (0, Op::Create),
        (1, Op::PublishKeyPackage),
        (
            0,
            Op::Add {
                target: 1,
                key_package_step: 1,
            },
        ),
        (0, Op::Send),
        (1, Op::Send),
        (1, Op::Update),
        (2, Op::PublishKeyPackage),
        (
            1,
            Op::Add {
                target: 2,
                key_package_step: 6,
            },
        ),
    ];
    for k in 0..1200 {
        steps.push((k % 3, if k % 2 == 0 { Op::Update } else { Op::Send }));
    }
    steps.extend([
        (0, Op::Remove { target: 2 }),
        (1, Op::Send),
        (0, Op::Update),
        (1, Op::Send),
    ]);
    steps
}

/// What the script says about `member` after step `applied`: (joined, removed, epoch).
fn expected(member: usize, applied: i64) -> (bool, bool, u64) {
    let (mut joined, mut removed, mut epoch) = (false, false, 0u64);
    for (i, (actor, op)) in script().into_iter().enumerate() {
        if i as i64 > applied {
            break;
        }
        match op {
            Op::Create => joined |= actor == member,
            Op::Add { target, .. } => {
                epoch += 1;
                joined |= target == member;
            }
            Op::Update => epoch += 1,
            Op::Remove { target } => {
                epoch += 1;
                removed |= target == member;
            }
            Op::Send | Op::PublishKeyPackage => {}
        }
    }
    (joined, removed, epoch)
}

// ------------------------------------------------------------------------------------------
// child

/// Reads a message from a member's outbox: (member, step, part).
type Outbox<'a> = &'a dyn Fn(usize, usize, &str) -> Option<Vec<u8>>;

struct Device {
    index: usize,
    store: SharedStore,
    provider: SpacePandaProvider,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    group: Option<MlsGroup>,
    applied: i64,
}

fn open_device(dir: &Path, index: usize) -> Device {
    let name = NAMES[index];
    let store: SharedStore = Arc::new(RedbStore::open(dir.join(format!("{name}.redb"))).unwrap());
    let provider = SpacePandaProvider::open(store.clone()).unwrap();
    let signer_key = Key::from_segment("signer");
    let signer = match store.get(PROGRESS, &signer_key).unwrap() {
        Some(public) => {
            SignatureKeyPair::read(provider.storage(), &public, CS.signature_algorithm())
                .expect("signer stored with its public key")
        }
        None => {
            let signer = SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
            provider
                .transaction(|p| {
                    signer.store(p.storage())?;
                    p.storage().with_transaction(|txn| {
                        Ok(txn.put(PROGRESS, signer_key.clone(), signer.to_public_vec())?)
                    })
                })
                .unwrap();
            signer
        }
    };
    let applied = match store.get(PROGRESS, &Key::from_segment("applied")).unwrap() {
        Some(b) => i64::from_be_bytes(b.try_into().unwrap()),
        None => -1,
    };
    let group = provider.load_group(&GroupId::from_slice(GROUP)).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    Device {
        index,
        store,
        provider,
        signer,
        credential,
        group,
        applied,
    }
}

fn outbox_key(step: usize, part: &str) -> Key {
    Key::from_segments([&(step as u64).to_be_bytes()[..], part.as_bytes()])
}

fn state_line(kind: &str, d: &Device) -> String {
    let (epoch, auth) = match &d.group {
        Some(g) => (
            g.epoch().as_u64().to_string(),
            hex::encode(g.epoch_authenticator().as_slice()),
        ),
        None => ("-".to_owned(), "-".to_owned()),
    };
    format!("{kind} {} {} {epoch} {auth}", d.index, d.applied)
}

/// Runs one step's transaction for `d` (the operation if `d` is the actor, else delivery),
/// writing the progress marker (and outbox) in the same transaction.
fn run(d: &mut Device, devices_outbox: Outbox<'_>, step: usize, actor: usize, op: Op) {
    let name = NAMES[d.index];
    let (signer, credential) = (&d.signer, &d.credential);
    let me = d.index;
    let own = me == actor;
    d.provider
        .optional_group_transaction(&GroupId::from_slice(GROUP), &mut d.group, |p, group| {
            let mut out: Vec<(&str, Vec<u8>)> = Vec::new();
            if own {
                match op {
                    Op::Create => {
                        let config = MlsGroupCreateConfig::builder()
                            .ciphersuite(CS)
                            .use_ratchet_tree_extension(true)
                            .build();
                        *group = Some(
                            MlsGroup::new_with_group_id(
                                p,
                                signer,
                                &config,
                                GroupId::from_slice(GROUP),
                                credential.clone(),
                            )
                            .map_err(|e| MlsError::openmls("create", e))?,
                        );
                    }
                    Op::PublishKeyPackage => {
                        let bundle = KeyPackage::builder()
                            .build(CS, p, signer, credential.clone())
                            .map_err(|e| MlsError::openmls("key package", e))?;
                        out.push(("kp", bundle.key_package().tls_serialize_detached().unwrap()));
                    }
                    Op::Add {
                        target,
                        key_package_step,
                    } => {
                        let kp = devices_outbox(target, key_package_step, "kp")
                            .expect("published key package");
                        let kp = KeyPackageIn::tls_deserialize_exact(kp)
                            .unwrap()
                            .validate(p.crypto(), ProtocolVersion::Mls10)
                            .unwrap();
                        let g = group.as_mut().expect("actor is a member");
                        let (commit, welcome, _) = g
                            .add_members(p, signer, &[kp])
                            .map_err(|e| MlsError::openmls("add", e))?;
                        g.merge_pending_commit(p)
                            .map_err(|e| MlsError::openmls("merge", e))?;
                        out.push(("commit", bytes(&commit)));
                        out.push(("welcome", bytes(&welcome)));
                    }
                    Op::Send => {
                        let g = group.as_mut().expect("actor is a member");
                        let text = format!("step {step} from {name}");
                        let m = g
                            .create_message(p, signer, text.as_bytes())
                            .map_err(|e| MlsError::openmls("send", e))?;
                        out.push(("commit", bytes(&m)));
                    }
                    Op::Update => {
                        let g = group.as_mut().expect("actor is a member");
                        let bundle = g
                            .self_update(p, signer, LeafNodeParameters::default())
                            .map_err(|e| MlsError::openmls("update", e))?;
                        g.merge_pending_commit(p)
                            .map_err(|e| MlsError::openmls("merge", e))?;
                        out.push(("commit", bytes(bundle.commit())));
                    }
                    Op::Remove { target } => {
                        let g = group.as_mut().expect("actor is a member");
                        let index = g
                            .members()
                            .find(|m| m.credential.serialized_content() == NAMES[target].as_bytes())
                            .unwrap()
                            .index;
                        let (commit, _, _) = g
                            .remove_members(p, signer, &[index])
                            .map_err(|e| MlsError::openmls("remove", e))?;
                        g.merge_pending_commit(p)
                            .map_err(|e| MlsError::openmls("merge", e))?;
                        out.push(("commit", bytes(&commit)));
                    }
                }
            } else {
                match op {
                    Op::Create | Op::PublishKeyPackage => {}
                    Op::Add { target, .. } if target == me => {
                        let welcome =
                            devices_outbox(actor, step, "welcome").expect("actor's outbox");
                        let MlsMessageBodyIn::Welcome(welcome) = parse(&welcome)?.extract() else {
                            panic!("not a welcome")
                        };
                        *group = Some(
                            StagedWelcome::new_from_welcome(p, &join_config(), welcome, None)
                                .and_then(|s| s.into_group(p))
                                .map_err(|e| MlsError::openmls("join", e))?,
                        );
                    }
                    _ => {
                        if let Some(g) = group.as_mut().filter(|g| g.is_active()) {
                            let message =
                                devices_outbox(actor, step, "commit").expect("actor's outbox");
                            let message = parse(&message)?.try_into_protocol_message().unwrap();
                            let processed = g
                                .process_message(p, message)
                                .map_err(|e| MlsError::openmls("process", e))?;
                            match processed.into_content() {
                                ProcessedMessageContent::ApplicationMessage(app) => {
                                    let want = format!("step {step} from {}", NAMES[actor]);
                                    assert_eq!(
                                        app.into_bytes(),
                                        want.as_bytes(),
                                        "{name} step {step}"
                                    );
                                }
                                ProcessedMessageContent::StagedCommitMessage(staged) => {
                                    g.merge_staged_commit(p, *staged)
                                        .map_err(|e| MlsError::openmls("merge", e))?;
                                }
                                other => panic!("unexpected {other:?}"),
                            }
                        }
                    }
                }
            }
            p.storage().with_transaction(|txn| {
                for (part, message) in out {
                    txn.put(OUTBOX, outbox_key(step, part), message)?;
                }
                txn.put(
                    PROGRESS,
                    Key::from_segment("applied"),
                    (step as i64).to_be_bytes().to_vec(),
                )?;
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{name} step {step}: {e}"));
    d.applied = step as i64;
}

/// Checks one member's loaded state against the script.
fn check_loaded(d: &Device) {
    let (joined, removed, epoch) = expected(d.index, d.applied);
    match &d.group {
        None => assert!(!joined, "{} lost its group", NAMES[d.index]),
        Some(g) => {
            assert!(joined, "{} has a group it never joined", NAMES[d.index]);
            if removed {
                assert!(!g.is_active());
            } else {
                assert_eq!(
                    g.epoch().as_u64(),
                    epoch,
                    "{} epoch vs progress marker",
                    NAMES[d.index]
                );
            }
        }
    }
}

fn child(dir: &Path) {
    let mut devices: Vec<Device> = (0..NAMES.len()).map(|i| open_device(dir, i)).collect();
    for d in &devices {
        check_loaded(d);
        println!("{}", state_line("L", d));
    }
    // Members that applied the same step agree.
    for a in &devices {
        for b in &devices {
            if let (Some(x), Some(y)) = (&a.group, &b.group)
                && a.applied == b.applied
                && x.is_active()
                && y.is_active()
            {
                assert_eq!(
                    x.epoch_authenticator().as_slice(),
                    y.epoch_authenticator().as_slice()
                );
            }
        }
    }

    let stores: Vec<SharedStore> = devices.iter().map(|d| d.store.clone()).collect();
    let outbox = move |member: usize, step: usize, part: &str| {
        stores[member].get(OUTBOX, &outbox_key(step, part)).unwrap()
    };
    for (step, (actor, op)) in script().into_iter().enumerate() {
        let order = std::iter::once(actor).chain((0..NAMES.len()).filter(|i| *i != actor));
        for i in order {
            let d = &mut devices[i];
            if d.applied < step as i64 {
                run(d, &outbox, step, actor, op);
                println!("{}", state_line("C", d));
            }
        }
    }

    let active: Vec<&MlsGroup> = devices
        .iter()
        .filter_map(|d| d.group.as_ref())
        .filter(|g| g.is_active())
        .collect();
    assert_eq!(active.len(), 2);
    common::assert_agree(&active);
    println!("DONE");
}

// ------------------------------------------------------------------------------------------
// parent

#[derive(Clone, Debug, PartialEq)]
struct State {
    applied: i64,
    auth: String,
}

fn parse_lines(output: &str) -> Vec<(char, usize, State)> {
    output
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let kind = parts.next()?.chars().next()?;
            if kind != 'L' && kind != 'C' {
                return None;
            }
            let member = parts.next()?.parse().ok()?;
            let applied = parts.next()?.parse().ok()?;
            let _epoch = parts.next()?;
            let auth = parts.next()?.to_owned();
            Some((kind, member, State { applied, auth }))
        })
        .collect()
}

fn spawn(dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&PathBuf::from(&args[2]));
        return;
    }
    // `cargo test` passes harness flags (e.g. `--nocapture`, filters); the parent ignores them.
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen());
    println!("crash_restart: seed {seed} (replay with CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();

    let mut last: BTreeMap<usize, State> = BTreeMap::new();
    let mut interrupted = 0;
    let mut runs = 0;
    let total_steps = script().len() as i64;
    while interrupted < KILLS {
        runs += 1;
        assert!(
            runs < KILLS * 4,
            "the child keeps finishing before it is killed"
        );
        let mut child = spawn(dir.path());
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..90)));
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap();
            interrupted += 1;
        }
        let status = child.wait().unwrap();
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        if finished {
            assert!(
                status.success(),
                "child failed (seed {seed}):\n{stdout}\n{stderr}"
            );
        }
        assert!(
            !stderr.contains("panicked"),
            "child panicked (seed {seed}):\n{stderr}"
        );

        // Durability and atomicity: after a restart each member is where its last printed
        // (committed) transaction left it, or one transaction further (committed, killed before
        // printing) — and at most one member can be in the second case.
        let lines = parse_lines(&stdout);
        let mut ahead = 0;
        for (kind, member, state) in &lines {
            if *kind == 'L'
                && let Some(before) = last.get(member)
            {
                if state.applied == before.applied {
                    assert_eq!(
                        state, before,
                        "member {member} changed without a commit (seed {seed})"
                    );
                } else {
                    assert_eq!(
                        state.applied,
                        before.applied + 1,
                        "member {member} jumped (seed {seed})"
                    );
                    ahead += 1;
                }
            }
        }
        assert!(
            ahead <= 1,
            "{ahead} members committed unprinted transactions (seed {seed})"
        );
        for (_, member, state) in lines {
            last.insert(member, state);
        }
        if stdout.contains("DONE") {
            break;
        }
        let min_applied = last.values().map(|s| s.applied).min().unwrap_or(-1);
        println!(
            "run {runs}: killed={} progress {min_applied}/{total_steps}",
            !finished
        );
    }

    assert!(
        interrupted >= 15,
        "only {interrupted} kills landed mid-stream (seed {seed})"
    );

    // Finish the stream without interruption; the child checks convergence.
    let output = spawn(dir.path()).wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("DONE"),
        "final run failed (seed {seed}):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("crash_restart: ok, {interrupted} kills in {runs} runs");
}
