//! Times the phases of one fuzz input (fixture build, restore+open, processing), to keep the
//! stateful targets fast. `cargo run --release --example timing`.
#![allow(clippy::unwrap_used, missing_docs)]
use std::time::Instant;

use core_mls::EnvelopeKind;
use spacepanda_fuzz::{FIXTURE, one_envelope, restore};

fn main() {
    let t = Instant::now();
    let fx = &*FIXTURE;
    println!("fixture: {:?}", t.elapsed());
    println!(
        "bob snapshot entries: {}, bytes: {}",
        fx.bob.snapshot.len(),
        fx.bob.snapshot.iter().map(|e| e.2.len()).sum::<usize>()
    );
    for (ns, _, v) in &fx.bob.snapshot {
        print!("{ns}:{} ", v.len());
    }
    println!();
    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        let _ = restore(&fx.bob.snapshot);
    }
    println!("restore: {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let _ = fx.bob.open();
    }
    println!("restore+open: {:?}", t.elapsed() / n);
    let mut bad = fx.commits[0].envelope.clone();
    let l = bad.len();
    bad[l - 5] ^= 1;
    let t = Instant::now();
    for _ in 0..n {
        let mut b = fx.bob.open();
        let _ = b.handle_envelope(&bad);
    }
    println!("open+bad commit: {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let mut b = fx.bob.open();
        b.send(&fx.group, b"x").unwrap();
    }
    println!("open+send: {:?}", t.elapsed() / n);
    let mut b = fx.bob.open();
    let sent = b.send(&fx.group, b"x").unwrap();
    let env = one_envelope(&sent, EnvelopeKind::Application);
    let t = Instant::now();
    for _ in 0..n {
        let mut c = fx.carol.open();
        c.handle_envelope(&env).unwrap();
    }
    println!("open+decrypt: {:?}", t.elapsed() / n);
    for case in &fx.commits {
        let t = Instant::now();
        for _ in 0..n {
            let mut b = fx.bob.open();
            b.handle_envelope(&case.envelope).unwrap();
        }
        println!(
            "open+commit {}: {:?} ({} bytes)",
            case.name,
            t.elapsed() / n,
            case.envelope.len()
        );
    }
    let t = Instant::now();
    for _ in 0..n {
        let mut d = fx.dave.open();
        d.handle_envelope(fx.welcome()).unwrap();
    }
    println!("open+welcome: {:?}", t.elapsed() / n);
}
