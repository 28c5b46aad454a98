//! Writes the committed seed corpora `fuzz/seeds/<target>/` from real messages of a live group
//! (the same fixture the targets build): genuine commits, proposals, application messages,
//! Welcomes, key packages, credentials and stored values, each in the input format of its
//! target (see `src/lib.rs`: a selector byte, then edits or raw bytes).
//!
//! ```text
//! cd fuzz && cargo run --release --example make_seeds    # rewrites seeds/
//! ```
//!
//! Keys differ per process, so seeds of the "edit" form stay meaningful in any process (they
//! name a base message and edits), and raw seeds give the fuzzer real structure to start from.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs;
use std::path::Path;

use core_mls::Envelope;
use spacepanda_fuzz::{Device, FIXTURE};

fn edit(op: u8, pos: u16, arg: u8) -> [u8; 4] {
    let [hi, lo] = pos.to_be_bytes();
    [op, hi, lo, arg]
}

/// Seeds for a message target: genuine base (no edits), single edits spread over the message,
/// the raw payload and the raw envelope.
fn message_seeds(bases: &[Vec<u8>]) -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        let sel = i as u8;
        let payload = Envelope::from_bytes(base, usize::MAX)
            .unwrap()
            .payload()
            .to_vec();
        seeds.push((format!("base{i}_genuine"), vec![sel]));
        let len = payload.len() as u16;
        for (k, frac) in [1u16, 4, 8, 16, 32, 48, 62].iter().enumerate() {
            let pos = (u32::from(len) * u32::from(*frac) / 64) as u16;
            let mut s = vec![sel];
            s.extend(edit((k % 8) as u8, pos, 0x01 + k as u8));
            seeds.push((format!("base{i}_edit{k}"), s));
        }
        let mut s = vec![sel];
        s.extend(edit(5, len / 2, 0));
        seeds.push((format!("base{i}_truncate"), s));
        let mut s = vec![0x80];
        s.extend(&payload);
        seeds.push((format!("base{i}_payload"), s));
        let mut s = vec![0xc0];
        s.extend(base);
        seeds.push((format!("base{i}_envelope"), s));
    }
    seeds
}

fn write(root: &Path, target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir = root.join(target);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).unwrap();
    }
    println!("{target}: {} seeds", seeds.len());
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let fx = &*FIXTURE;

    let commits: Vec<Vec<u8>> = fx.commits.iter().map(|c| c.envelope.clone()).collect();
    write(&root, "process_commit", &message_seeds(&commits));
    let applications: Vec<Vec<u8>> = fx.applications.iter().map(|(e, _)| e.clone()).collect();
    write(&root, "process_application", &message_seeds(&applications));
    write(&root, "process_proposal", &message_seeds(&fx.proposals));
    write(&root, "welcome", &message_seeds(&[fx.welcome().to_vec()]));

    // envelope: every real envelope, to a fresh client (selector 0) and to bob (1, 3 spliced).
    let mut all: Vec<Vec<u8>> = Vec::new();
    all.extend(commits.iter().cloned());
    all.extend(applications.iter().cloned());
    all.extend(fx.proposals.iter().cloned());
    all.push(fx.welcome().to_vec());
    let mut seeds = Vec::new();
    for (i, e) in all.iter().enumerate() {
        for sel in [0u8, 1, 3] {
            let mut s = vec![sel];
            s.extend(e);
            seeds.push((format!("env{i}_sel{sel}"), s));
        }
    }
    seeds.push(("short".into(), vec![0, 0, 1, 1, 0, 0, 0, 1, 0]));
    write(&root, "envelope", &seeds);

    // credential: the real credential in each mode.
    let alice = Device::new("alice ✓");
    let credential = alice.identity.credential_bytes().to_vec();
    let key = alice.identity.signature_public_key();
    let mut seeds = Vec::new();
    let mut s = vec![0];
    s.extend(key);
    s.extend(&credential);
    seeds.push(("arbitrary_real".into(), s));
    for (k, pos) in [0u16, 2, 40, 60, 90, 100, 110, 120, 150, 170]
        .iter()
        .enumerate()
    {
        let mut s = vec![1];
        s.extend(edit((k % 8) as u8, *pos, 1));
        seeds.push((format!("edit{k}"), s));
    }
    seeds.push(("genuine".into(), vec![1]));
    let mut s = vec![3];
    s.extend(edit(0, 31, 1));
    seeds.push(("leaf_key_edit".into(), s));
    write(&root, "credential", &seeds);

    // key_package: each base, genuine and edited; raw; paired with a genuine one.
    let dave = Device::new("dave");
    let kp = dave.key_package(false);
    let mut seeds = Vec::new();
    for base in 0u8..3 {
        seeds.push((format!("base{base}_genuine"), vec![base]));
        for (k, pos) in [6u16, 40, 100, 200, 300, 400].iter().enumerate() {
            let mut s = vec![base];
            s.extend(edit((k % 8) as u8, *pos, 0x10));
            seeds.push((format!("base{base}_edit{k}"), s));
        }
        seeds.push((format!("base{base}_pair"), vec![0xc0 | base]));
    }
    let mut s = vec![0x80];
    s.extend(&kp);
    seeds.push(("raw".into(), s));
    write(&root, "key_package", &seeds);

    // storage_value: for each stored entry, a flipped byte; some replaced, deleted, swapped.
    let entries = &fx.bob.snapshot;
    let mut seeds = Vec::new();
    for (i, (ns, _, value)) in entries.iter().enumerate() {
        let [hi, lo] = (i as u16).to_be_bytes();
        if ns == "kp_ledger" || ns == "mls_key_package" {
            // 30+ near-identical entries each; a few are enough.
            if i % 8 != 0 {
                continue;
            }
        }
        let mut s = vec![0, hi, lo];
        s.extend(edit(0, (value.len() / 2) as u16, 1));
        seeds.push((format!("entry{i}_{ns}_flip"), s));
    }
    for (i, mode) in [(0u16, 1u8), (40, 1), (43, 2), (44, 2), (45, 3)] {
        let [hi, lo] = i.to_be_bytes();
        seeds.push((format!("entry{i}_mode{mode}"), vec![mode, hi, lo, 0, 7]));
    }
    write(&root, "storage_value", &seeds);

    // sealed_value: an empty header and a value.
    write(
        &root,
        "sealed_value",
        &[
            ("header".into(), vec![0, 1, 2, 3]),
            ("value".into(), vec![1, 0, 1, 2]),
        ],
    );
}
