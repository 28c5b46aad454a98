//! The `spacepanda` binary as people use it: real processes on loopback TCP, one `serve`
//! and users in their own data directories, driven through stdin, checked on stdout. One
//! user's process is killed and restarted; what was sent meanwhile waits in mailboxes and
//! arrives. Bad input gets a one-line error, a non-zero exit, and loses nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod process_kit;

use std::path::Path;

use process_kit::{Process, init, run_once, stderr, stdout};

const PASSPHRASE: &str = "correct horse battery staple";

fn path(dir: &Path) -> &str {
    dir.to_str().expect("utf-8 path")
}

/// Starts `spacepanda run` for a device; waits until it is ready.
fn start_user(name: &str, dir: &Path, bootstrap: Option<&str>) -> Process {
    let mut args = vec!["run", "--data-dir", path(dir)];
    if let Some(bootstrap) = bootstrap {
        args.extend(["--bootstrap", bootstrap]);
    }
    let mut process = Process::start(name, &args, PASSPHRASE);
    process.wait_for("ready: you are");
    process
}

/// Polls `/status` until the user's outbox is empty (every envelope pushed or deposited).
fn wait_until_flushed(user: &mut Process) {
    for _ in 0..200 {
        user.say("/status");
        let line = user.wait_for_next("outbox:");
        if line.contains("outbox: 0 envelopes") {
            return;
        }
    }
    panic!("{}'s outbox never emptied", user.name);
}

#[test]
fn three_users_chat_through_a_serve_node_and_one_comes_back_from_a_kill() {
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| root.path().join(name);

    let mut serve = Process::start(
        "serve",
        &["serve", "--data-dir", path(&dir("serve"))],
        PASSPHRASE,
    );
    let bootstrap = serve
        .wait_for("serving at ")
        .trim_start_matches("serving at ")
        .to_owned();

    let alice_address = init(&dir("alice"), "alice", PASSPHRASE);
    let bob_address = init(&dir("bob"), "bob", PASSPHRASE);
    let carol_address = init(&dir("carol"), "carol", PASSPHRASE);
    // A second bob, so that the bare name is ambiguous.
    init(&dir("other-bob"), "bob", PASSPHRASE);

    let mut alice = start_user("alice", &dir("alice"), Some(&bootstrap));
    let mut bob = start_user("bob", &dir("bob"), Some(&bootstrap));
    let mut carol = start_user("carol", &dir("carol"), Some(&bootstrap));
    let mut other_bob = start_user("other-bob", &dir("other-bob"), Some(&bootstrap));
    for user in [&mut alice, &mut bob, &mut carol, &mut other_bob] {
        user.wait_for("published ");
    }

    alice.say("/create team");
    alice.wait_for("* created #team");
    // An address nobody published, and a name two users have: one line each, nothing done.
    alice.say("/invite team zed@00000000");
    alice.wait_for("! no valid");
    alice.say("/invite team bob");
    let ambiguous = alice.wait_for("matches 2 users");
    assert!(ambiguous.starts_with("! "), "{ambiguous}");

    alice.say(&format!("/invite team {bob_address} {carol_address}"));
    let invited = alice.wait_for("* invited ");
    assert!(
        invited.contains(&bob_address) && invited.contains(&carol_address),
        "{invited}"
    );
    for user in [&mut bob, &mut carol] {
        user.wait_for(&format!("{alice_address} added you to"));
        // The group's name travels with the invitation.
        user.wait_for("is called #team");
    }

    alice.say("hello from alice");
    bob.wait_for(&format!("#team {alice_address}: hello from alice"));
    carol.wait_for(&format!("#team {alice_address}: hello from alice"));
    bob.say("hi, bob here");
    alice.wait_for(&format!("#team {bob_address}: hi, bob here"));
    carol.wait_for(&format!("#team {bob_address}: hi, bob here"));

    alice.say("/members team");
    let own_line = alice.wait_for(&format!("  {alice_address}  device"));
    assert!(own_line.ends_with("(this device)"), "{own_line}");
    alice.wait_for(&format!("  {carol_address}  device"));
    let member_line = alice.wait_for(&format!("  {bob_address}  device"));
    assert!(member_line.contains("safety number "), "{member_line}");
    bob.say(&format!("/safety {alice_address}"));
    let bob_view = bob.wait_for("safety number with ");
    alice.say(&format!("/safety {bob_address}"));
    let alice_view = alice.wait_for("safety number with ");
    let number = |line: &str| line.rsplit(": ").next().unwrap().to_owned();
    assert_eq!(
        number(&bob_view),
        number(&alice_view),
        "both sides see one number"
    );

    // Carol's process dies without a word; alice and bob write while it is gone.
    carol.kill();
    alice.say("carol, this waited for you (1)");
    alice.say("carol, and this after it (2)");
    bob.say("carol, this too (3)");
    bob.wait_for(&format!("{alice_address}: carol, and this after it (2)"));
    alice.wait_for(&format!("{bob_address}: carol, this too (3)"));
    wait_until_flushed(&mut alice);
    wait_until_flushed(&mut bob);

    // Restarted without --bootstrap: it joins through the address it saved.
    let mut carol = start_user("carol", &dir("carol"), None);
    let first = carol.wait_for("carol, this waited for you (1)");
    let second = carol.wait_for("carol, and this after it (2)");
    let third = carol.wait_for("carol, this too (3)");
    assert!(first.contains(&alice_address) && second.contains(&alice_address));
    assert!(third.contains(&bob_address));
    assert!(
        carol.position("(1)") < carol.position("(2)"),
        "one sender's messages in the order they were sent"
    );
    carol.say("back again");
    alice.wait_for(&format!("{carol_address}: back again"));
    bob.wait_for(&format!("{carol_address}: back again"));

    // A removal: carol is told, and what follows does not reach her.
    alice.say("/remove team carol");
    alice.wait_for(&format!("* removed {carol_address}"));
    carol.wait_for("you were removed from #team");
    alice.say("after carol left");
    bob.wait_for("after carol left");
    carol.say("/groups");
    carol.wait_for_next("no groups yet");
    assert!(carol.position("after carol left").is_none());

    for user in [alice, bob, carol, other_bob] {
        assert!(user.quit().success());
    }
    drop(serve);
}

#[test]
fn bad_input_gets_one_line_a_non_zero_exit_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let alice = root.path().join("alice");
    let address = init(&alice, "alice", PASSPHRASE);

    // A second init: refused, the device kept.
    let again = run_once(
        &["init", "--name", "mallory", "--data-dir", path(&alice)],
        Some(PASSPHRASE),
    );
    assert!(!again.status.success());
    assert_one_line(&again, "already holds a device");

    // A wrong passphrase: refused, nothing changed.
    let wrong = run_once(
        &["whoami", "--data-dir", path(&alice)],
        Some("not the passphrase"),
    );
    assert!(!wrong.status.success());
    assert_one_line(&wrong, "wrong passphrase");
    // No passphrase at all, and no terminal to ask on.
    let none = run_once(&["whoami", "--data-dir", path(&alice)], None);
    assert!(!none.status.success());
    assert_one_line(&none, "SPACEPANDA_PASSPHRASE");

    // A directory with no device: nothing is created in it.
    let empty = root.path().join("nobody");
    let nobody = run_once(&["run", "--data-dir", path(&empty)], Some(PASSPHRASE));
    assert!(!nobody.status.success());
    assert_one_line(&nobody, "holds no device yet");
    assert!(!empty.exists(), "a failed run leaves nothing behind");

    // A bootstrap node that is not there.
    let unreachable = run_once(
        &[
            "run",
            "--data-dir",
            path(&alice),
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWFwGhRjGnen19ivE7YpfNNcVwTF4mZSswatsKSeZift2P",
        ],
        Some(PASSPHRASE),
    );
    assert!(!unreachable.status.success());
    assert_one_line(&unreachable, "cannot join the network");

    // The data directory in use by another process.
    let mut running = Process::start("alice", &["run", "--data-dir", path(&alice)], PASSPHRASE);
    running.wait_for("ready: you are");
    let busy = run_once(&["whoami", "--data-dir", path(&alice)], Some(PASSPHRASE));
    assert!(!busy.status.success());
    assert_one_line(&busy, "in use by another spacepanda process");
    assert!(running.quit().success());

    // After all of that, the device is intact.
    let whoami = run_once(&["whoami", "--data-dir", path(&alice)], Some(PASSPHRASE));
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    assert!(stdout(&whoami).contains(&format!("address       {address}")));
}

#[test]
fn a_linked_device_is_the_same_user_and_joins_its_groups() {
    let root = tempfile::tempdir().unwrap();
    let laptop = root.path().join("laptop");
    let phone = root.path().join("phone");
    let link = root.path().join("alice.link");
    let address = init(&laptop, "alice", PASSPHRASE);

    let export = run_once(
        &["link", "export", path(&link), "--data-dir", path(&laptop)],
        Some(PASSPHRASE),
    );
    assert!(export.status.success(), "{}", stderr(&export));
    // The link file is sealed: the wrong passphrase opens nothing, and creates no device.
    let wrong = run_once(
        &["link", "import", path(&link), "--data-dir", path(&phone)],
        Some("not the passphrase"),
    );
    assert!(!wrong.status.success());
    assert_one_line(&wrong, "wrong passphrase");
    assert!(!phone.join("device.redb").exists());
    let raw = std::fs::read(&link).unwrap();
    assert!(
        !raw.windows(5).any(|window| window == b"alice"),
        "the link file shows nothing in the clear"
    );

    let import = run_once(
        &["link", "import", path(&link), "--data-dir", path(&phone)],
        Some(PASSPHRASE),
    );
    assert!(import.status.success(), "{}", stderr(&import));
    assert!(stdout(&import).starts_with(&format!("linked {address} ")));
    let devices: Vec<String> = [&laptop, &phone]
        .iter()
        .map(|dir| {
            let out = run_once(&["whoami", "--data-dir", path(dir)], Some(PASSPHRASE));
            assert!(out.status.success());
            stdout(&out)
        })
        .collect();
    let line = |out: &str, key: &str| {
        out.lines()
            .find(|line| line.starts_with(key))
            .unwrap()
            .to_owned()
    };
    assert_eq!(line(&devices[0], "user id"), line(&devices[1], "user id"));
    assert_ne!(
        line(&devices[0], "this device"),
        line(&devices[1], "this device")
    );

    // Nobody invites the phone: it joins the laptop's group by itself.
    let mut serve = Process::start(
        "serve",
        &["serve", "--data-dir", path(&root.path().join("serve"))],
        PASSPHRASE,
    );
    let bootstrap = serve
        .wait_for("serving at ")
        .trim_start_matches("serving at ")
        .to_owned();
    let mut laptop_run = start_user("laptop", &laptop, Some(&bootstrap));
    laptop_run.wait_for("published ");
    laptop_run.say("/create team");
    laptop_run.wait_for("* created #team");
    let mut phone_run = start_user("phone", &phone, Some(&bootstrap));
    phone_run.wait_for("published ");
    phone_run.say("/join-mine");
    phone_run.wait_for("* joined #");
    laptop_run.wait_for("by itself");
    laptop_run.say("hello, phone");
    phone_run.wait_for(&format!("{address}: hello, phone"));
    phone_run.say("hello, laptop");
    laptop_run.wait_for(&format!("{address}: hello, laptop"));
    assert!(phone_run.quit().success());
    assert!(laptop_run.quit().success());
    serve.kill();
}

/// The command failed with exactly one line on stderr, naming `what`.
fn assert_one_line(output: &std::process::Output, what: &str) {
    let err = stderr(output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(what),
        "{err}"
    );
}
