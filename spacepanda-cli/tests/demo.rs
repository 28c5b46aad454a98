//! `spacepanda demo`, the README's main command, as a user runs it: a process that exits 0
//! only if every check held, and keeps its files with `--data-dir`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod process_kit;

use process_kit::{run_once, stderr, stdout};

#[test]
fn the_demo_holds_every_check_over_loopback_tcp() {
    let root = tempfile::tempdir().unwrap();
    let files = root.path().join("demo-files");
    let output = run_once(&["demo", "--data-dir", files.to_str().unwrap()], None);
    let out = stdout(&output);
    assert!(
        output.status.success(),
        "the demo failed:\n{out}\n{}",
        stderr(&output)
    );
    assert!(out.contains("all 18 checks held"), "{out}");
    for operation in ["lookup", "invite", "message fan-out", "mailbox fetch"] {
        assert!(
            out.contains(operation),
            "the table times {operation}: {out}"
        );
    }
    // Every node kept its own sealed file.
    for node in ["alice-laptop", "alice-phone", "bob", "carol"] {
        assert!(
            files.join(node).join("device.redb").exists(),
            "{node}'s file"
        );
    }
    assert!(files.join("serve-0").join("serve.redb").exists());

    // It starts from scratch only.
    let again = run_once(&["demo", "--data-dir", files.to_str().unwrap()], None);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("is not empty"));
}
