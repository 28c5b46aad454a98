//! Restart: three members on RedbStore files create a group, add, message, update, propose,
//! remove; every store is dropped and reopened from its file between phases; groups load with
//! `MlsGroup::load` and continue. A Welcome made before the joiner's restart joins after it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use openmls_traits::OpenMlsProvider as _;

use common::{Member, assert_agree};

const GROUP: &[u8] = b"restart-group";

#[test]
fn groups_survive_restarts_and_continue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // ---- phase 1: create, add bob, talk, update, add carol (carol does not join yet) ----
    let carol_welcome;
    {
        let alice = Member::on_redb(d, "alice");
        let bob = Member::on_redb(d, "bob");
        let carol = Member::on_redb(d, "carol");

        let mut a = alice.create_group(GROUP);
        let (_, welcome) = alice.add(&mut a, &[bob.key_package()]);
        let mut b = bob.join(&welcome).unwrap();
        assert_agree(&[&a, &b]);

        let m = alice.send(&mut a, b"hello bob");
        assert_eq!(
            bob.receive(&mut b, &m).unwrap().as_deref(),
            Some(&b"hello bob"[..])
        );
        let m = bob.send(&mut b, b"hi alice");
        assert_eq!(
            alice.receive(&mut a, &m).unwrap().as_deref(),
            Some(&b"hi alice"[..])
        );

        let commit = bob.self_update(&mut b);
        alice.receive(&mut a, &commit).unwrap();
        assert_agree(&[&a, &b]);

        let carol_kp = carol.key_package();
        let (commit, welcome) = alice.add(&mut a, &[carol_kp]);
        bob.receive(&mut b, &commit).unwrap();
        assert_agree(&[&a, &b]);
        carol_welcome = welcome;

        // A message sent before the restart, delivered after it.
        let late = alice.send(&mut a, b"sent before the restart");
        std::fs::write(d.join("late.msg"), late).unwrap();
        // Everyone is dropped here: the stores close.
    }

    // ---- phase 2: reopen; carol joins with the old Welcome; bob proposes, alice commits ----
    {
        let alice = Member::reopen_redb(d, "alice");
        let bob = Member::reopen_redb(d, "bob");
        let carol = Member::reopen_redb(d, "carol");
        assert_eq!(
            alice.provider.storage().list_groups().unwrap(),
            vec![openmls::prelude::GroupId::from_slice(GROUP)]
        );
        assert!(carol.provider.storage().list_groups().unwrap().is_empty());

        let mut a = alice.load(GROUP).expect("alice's group loads");
        let mut b = bob.load(GROUP).expect("bob's group loads");
        assert_agree(&[&a, &b]);
        let epoch_before = a.epoch();

        let late = std::fs::read(d.join("late.msg")).unwrap();
        assert_eq!(
            bob.receive(&mut b, &late).unwrap().as_deref(),
            Some(&b"sent before the restart"[..])
        );

        let mut c = carol
            .join(&carol_welcome)
            .expect("pre-restart Welcome still joins");
        assert_agree(&[&a, &b, &c]);
        assert_eq!(c.members().count(), 3);

        let m = carol.send(&mut c, b"carol here");
        assert_eq!(
            alice.receive(&mut a, &m).unwrap().as_deref(),
            Some(&b"carol here"[..])
        );
        assert_eq!(
            bob.receive(&mut b, &m).unwrap().as_deref(),
            Some(&b"carol here"[..])
        );

        // Bob proposes an update; alice and carol queue it.
        let proposal = bob.propose_update(&mut b);
        alice.receive(&mut a, &proposal).unwrap();
        carol.receive(&mut c, &proposal).unwrap();
        assert_eq!(a.pending_proposals().count(), 1);
        assert_eq!(a.epoch(), epoch_before);
    }

    // ---- phase 3: reopen; the queued proposal survived; alice commits it; bob is removed ----
    {
        let alice = Member::reopen_redb(d, "alice");
        let bob = Member::reopen_redb(d, "bob");
        let carol = Member::reopen_redb(d, "carol");
        let mut a = alice.load(GROUP).unwrap();
        let mut b = bob.load(GROUP).unwrap();
        let mut c = carol.load(GROUP).unwrap();
        assert_eq!(
            a.pending_proposals().count(),
            1,
            "queued proposal survives a restart"
        );

        let commit = alice.commit_pending(&mut a);
        // Bob needs the private key of the leaf he proposed, stored before the restart.
        bob.receive(&mut b, &commit).unwrap();
        carol.receive(&mut c, &commit).unwrap();
        assert_agree(&[&a, &b, &c]);

        let commit = alice.remove(&mut a, "bob");
        carol.receive(&mut c, &commit).unwrap();
        bob.receive(&mut b, &commit).unwrap();
        assert!(!b.is_active(), "bob sees his removal");
        assert_agree(&[&a, &c]);
    }

    // ---- phase 4: reopen; alice and carol continue at a new epoch, both directions ----
    let alice = Member::reopen_redb(d, "alice");
    let bob = Member::reopen_redb(d, "bob");
    let carol = Member::reopen_redb(d, "carol");
    let mut a = alice.load(GROUP).unwrap();
    let mut c = carol.load(GROUP).unwrap();
    let b = bob.load(GROUP).expect("bob's (inactive) group still loads");
    assert!(!b.is_active());
    assert_agree(&[&a, &c]);
    let epoch = a.epoch();

    let commit = carol.self_update(&mut c);
    alice.receive(&mut a, &commit).unwrap();
    assert_agree(&[&a, &c]);
    assert_eq!(a.epoch().as_u64(), epoch.as_u64() + 1);
    let m = alice.send(&mut a, b"after three restarts");
    assert_eq!(
        carol.receive(&mut c, &m).unwrap().as_deref(),
        Some(&b"after three restarts"[..])
    );
    let m = carol.send(&mut c, b"and back");
    assert_eq!(
        alice.receive(&mut a, &m).unwrap().as_deref(),
        Some(&b"and back"[..])
    );
    assert_eq!(a.members().count(), 2);
}
