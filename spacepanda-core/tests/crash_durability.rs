//! Crash safety with a real process: a child writes numbered batches to a RedbStore and reports
//! each one after `apply` returns; the parent SIGKILLs it right after the n-th reported batch of
//! a run (n drawn from a fixed seed, `CRASH_SEED` to change it), while it writes the next one,
//! reopens the file, and checks that every batch is all-or-nothing and every reported batch is
//! there.
//!
//! `harness = false`: `main` is the parent unless its first argument is `child`, in which case
//! it is the writer (the parent re-executes this same binary).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use spacepanda_core::{Key, KeyValueStore, RedbStore, WriteBatch};

const KEYS_PER_BATCH: u32 = 64;
const KILLS: usize = 40;
/// Default seed of the kill points.
const DEFAULT_SEED: u64 = 0x00C0_FFEE;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("child") => child(Path::new(&args[2])),
        // libtest-style arguments (filters, --list) are ignored except --list, which must not
        // run anything.
        Some("--list") => println!("crash_durability: test"),
        _ => parent(),
    }
}

fn batch_key(batch: u64, index: u32) -> Key {
    Key::from_segments([&b"batch"[..], &batch.to_be_bytes(), &index.to_be_bytes()])
}

fn value(batch: u64, index: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(256);
    while v.len() < 256 {
        v.extend_from_slice(&batch.to_be_bytes());
        v.extend_from_slice(&index.to_be_bytes());
    }
    v
}

fn last_key() -> Key {
    Key::from_segment("last")
}

fn read_last(store: &RedbStore) -> Option<u64> {
    store
        .get("crash", &last_key())
        .unwrap()
        .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
}

fn child(path: &Path) {
    // The first child creates the file; every later one finds it (creation is atomic, so a
    // child killed while creating leaves no file).
    let store = if path.exists() {
        RedbStore::open(path).unwrap()
    } else {
        RedbStore::create(path).unwrap()
    };
    let mut next = read_last(&store).map_or(0, |last| last + 1);
    let stdout = std::io::stdout();
    {
        let mut out = stdout.lock();
        writeln!(out, "ready").unwrap();
        out.flush().unwrap();
    }
    loop {
        let mut batch = WriteBatch::new();
        for index in 0..KEYS_PER_BATCH {
            batch.put("crash", batch_key(next, index), value(next, index));
        }
        batch.put("crash", last_key(), next.to_be_bytes().to_vec());
        store.apply(batch).unwrap();
        let mut out = stdout.lock();
        writeln!(out, "{next}").unwrap();
        out.flush().unwrap();
        next += 1;
    }
}

/// Checks the file and returns the last complete batch.
fn verify(path: &Path, reported: Option<u64>) -> Option<u64> {
    let store = RedbStore::open(path).unwrap();
    let last = read_last(&store);
    if let Some(reported) = reported {
        let last =
            last.unwrap_or_else(|| panic!("batch {reported} was reported but nothing is stored"));
        assert!(
            last >= reported,
            "batch {reported} was reported, store ends at {last}"
        );
    }
    let entries = store
        .scan_prefix("crash", &Key::from_segment("batch"))
        .unwrap();
    let mut per_batch = std::collections::BTreeMap::<u64, u32>::new();
    for (key, stored) in &entries {
        let segments: Vec<&[u8]> = key.segments().collect();
        let batch = u64::from_be_bytes(segments[1].try_into().unwrap());
        let index = u32::from_be_bytes(segments[2].try_into().unwrap());
        assert_eq!(
            *stored,
            value(batch, index),
            "batch {batch} key {index} has wrong bytes"
        );
        *per_batch.entry(batch).or_default() += 1;
    }
    for (batch, count) in &per_batch {
        assert_eq!(
            *count, KEYS_PER_BATCH,
            "batch {batch} is torn: {count} of {KEYS_PER_BATCH} keys"
        );
    }
    // Batches are contiguous from 0 to `last`: nothing reported was lost, nothing half-applied.
    let expected: Vec<u64> = last.map_or(Vec::new(), |last| (0..=last).collect());
    assert_eq!(per_batch.keys().copied().collect::<Vec<_>>(), expected);
    last
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut last = None;
    let mut kills_mid_stream = 0;
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .arg("child")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // The kill lands right after this many batches of the run were reported.
        let kill_after: u32 = rng.gen_range(1..=20);
        let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            let mut reported = 0;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if let Ok(batch) = line.trim().parse::<u64>() {
                    last = Some(batch);
                    reported += 1;
                    if reported == kill_after {
                        let _ = kill_tx.send(());
                    }
                }
            }
            last
        });
        // Kill while batches are being written, not while the child starts (slow when loaded).
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child never became ready");
        kill_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!("round {round}: the child reported fewer than {kill_after} batches")
            });
        child.kill().unwrap(); // SIGKILL on unix
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child exited by itself: {status}"
        );
        let reported = reader.join().unwrap();
        let now = verify(&path, reported.or(last));
        if now > last {
            kills_mid_stream += 1;
        }
        last = now;
    }
    assert!(
        kills_mid_stream >= KILLS / 2,
        "only {kills_mid_stream} of {KILLS} rounds got any batch written: the test is not exercising crashes"
    );
    println!(
        "crash_durability: {KILLS} SIGKILLs (seed {seed}), {} batches of {KEYS_PER_BATCH} keys survived intact",
        last.map_or(0, |l| l + 1)
    );
    println!("test result: ok. 1 passed; 0 failed");
}
