//! Joining by external commit over the network: a new device of a member user joins the user's
//! groups with GroupInfos its other device serves, and a removed user gets none.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod network_kit;

use std::time::Duration;

use core_mls::Event;
use network_kit::nodes::{Device, dial_address, group_with, node_config, start_serves};
use network_kit::rng;

const BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_joins_its_users_groups_and_a_removed_user_cannot_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(2126);
    let serves = start_serves(&mut r, dir.path(), 4).await;
    let bootstrap = vec![dial_address(&serves[0])];
    let alice = Device::open("alice", dir.path().join("alice"), &bootstrap).await;
    let mut bob = Device::open("bob", dir.path().join("bob"), &bootstrap).await;
    let mut carol = Device::open("carol", dir.path().join("carol"), &bootstrap).await;
    let group = group_with(&alice, &mut [&mut bob, &mut carol]).await;

    // Alice's phone: linked from her laptop, invited by nobody.
    let mut config = node_config("alice", &bootstrap);
    config.link = Some(alice.node.export_identity_key().unwrap());
    let mut phone = Device::open_with("alice-phone", dir.path().join("phone"), config).await;
    phone.node.publish().await.unwrap();
    let joined = phone.node.join_own_groups().await.unwrap();
    assert_eq!(joined, vec![group.clone()]);
    assert!(
        phone
            .wait_until(BOUND, |d| d
                .seen
                .iter()
                .any(|e| matches!(e, Event::Rejoined { .. })))
            .await
    );
    assert!(
        bob.wait_until(BOUND, |d| d
            .seen
            .iter()
            .any(|e| matches!(e, Event::DeviceRejoined { .. })))
            .await,
        "bob hears that alice's phone joined"
    );
    let id = phone.node.send(&group, b"from the phone").await.unwrap();
    for member in [&mut bob, &mut carol] {
        assert!(
            member
                .wait_until(BOUND, |d| d.messages(&group).iter().any(|(m, _)| *m == id))
                .await,
            "{} gets the phone's message",
            member.name
        );
    }
    let id = bob.node.send(&group, b"hello phone").await.unwrap();
    assert!(
        phone
            .wait_until(BOUND, |d| d.messages(&group).iter().any(|(m, _)| *m == id))
            .await
    );

    // Carol is removed: members give her no GroupInfo (the engine refuses to export one for
    // a user with no device in the group: core_mls's external_join tests), and her node no
    // longer knows whom to ask.
    let carol_user = carol.node.device().user_id();
    alice.node.remove_user(&group, &carol_user).await.unwrap();
    assert!(
        carol
            .wait_until(BOUND, |d| d
                .seen
                .iter()
                .any(|e| matches!(e, Event::RemovedFromGroup { .. })))
            .await
    );
    let refused = carol.node.rejoin(&group).await.unwrap_err();
    assert!(
        matches!(refused, core_dht::DhtError::Unreachable { .. }),
        "{refused}"
    );
    assert!(!carol.node.groups().await.unwrap().contains(&group));
    let members = bob.node.members(&group).await.unwrap();
    assert_eq!(members.len(), 3, "alice, her phone, bob");
    assert!(members.iter().all(|m| m.member.user_id() != carol_user));
}

/// Whether every listed device's group works: each sends one message and every other one gets
/// it.
async fn everyone_hears_everyone(devices: &mut [&mut Device], group: &core_mls::GroupId) -> bool {
    for sender in 0..devices.len() {
        let id = devices[sender]
            .node
            .send(group, b"after the heal")
            .await
            .unwrap();
        for receiver in 0..devices.len() {
            if receiver == sender {
                continue;
            }
            let heard = devices[receiver]
                .wait_until(BOUND, |d| d.messages(group).iter().any(|(m, _)| *m == id))
                .await;
            if !heard {
                eprintln!(
                    "{} did not hear {}",
                    devices[receiver].name, devices[sender].name
                );
                // What each device was told, to tell a stuck rejoin from a slow one.
                for device in devices.iter() {
                    let told: Vec<String> = device
                        .seen
                        .iter()
                        .filter(|e| !matches!(e, Event::Message { .. }))
                        .map(|e| {
                            let t = format!("{e:?}");
                            let t = t
                                .split("group: GroupId(")
                                .map(|p| p.get(18..).unwrap_or(p))
                                .collect::<Vec<_>>()
                                .join("g");
                            t.chars().take(90).collect()
                        })
                        .collect();
                    eprintln!("{}: {told:?}", device.name);
                    let notices: Vec<String> = device
                        .notices
                        .iter()
                        .map(|n| format!("{n:?}").chars().take(300).collect())
                        .collect();
                    eprintln!("{} notices: {notices:?}", device.name);
                }
                return false;
            }
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cut_off_past_the_fork_window_heals_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(2127);
    let serves = start_serves(&mut r, dir.path(), 4).await;
    let bootstrap = vec![dial_address(&serves[0])];
    let config = |name: &str, bootstrap: &[libp2p::Multiaddr]| {
        let mut config = node_config(name, bootstrap);
        config.mls.fork_window_epochs = 2;
        config
    };
    let mut alice = Device::open_with(
        "alice",
        dir.path().join("alice"),
        config("alice", &bootstrap),
    )
    .await;
    let mut carol = Device::open_with(
        "carol",
        dir.path().join("carol"),
        config("carol", &bootstrap),
    )
    .await;
    let group = group_with(&alice, &mut [&mut carol]).await;

    // Carol's link is cut: her node runs with no peer at all while she and alice each make
    // three commits, more than the fork window of two holds.
    let carol_dir = carol.go_offline().await;
    let carol = Device::reopen_with("carol", carol_dir, || config("carol", &[]), BOUND).await;
    for _ in 0..3 {
        alice.node.self_update(&group).await.unwrap();
        carol.node.self_update(&group).await.unwrap();
    }
    assert!(
        alice.flushed(BOUND).await,
        "alice's commits reach a mailbox"
    );
    // The link heals: carol comes back with the network.
    let carol_dir = carol.go_offline().await;
    let mut carol =
        Device::reopen_with("carol", carol_dir, || config("carol", &bootstrap), BOUND).await;

    // Both engines refuse a commit older than their window; the side that is outranked
    // rejoins the other by itself, and the other is told.
    for device in [&mut alice, &mut carol] {
        let name = device.name.clone();
        assert!(
            device
                .wait_until(BOUND, |d| d.seen.iter().any(|e| matches!(
                    e,
                    Event::Rejoined { .. } | Event::DeviceRejoined { .. }
                )))
                .await,
            "{name} is told of the rejoin"
        );
    }
    let forked = [&alice, &carol].iter().any(|d| {
        d.seen
            .iter()
            .any(|e| matches!(e, Event::ForkOutsideWindow { .. }))
    });
    assert!(forked, "the split was past the window");
    assert!(
        everyone_hears_everyone(&mut [&mut alice, &mut carol], &group).await,
        "the group works again, one branch for both"
    );
    let members = alice.node.members(&group).await.unwrap();
    assert_eq!(members.len(), 2, "no leaf left behind by the rejoin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_store_is_lost_comes_back_under_its_id_and_its_old_leaf_goes() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(2128);
    let serves = start_serves(&mut r, dir.path(), 4).await;
    let bootstrap = vec![dial_address(&serves[0])];
    let mut alice = Device::open("alice", dir.path().join("alice"), &bootstrap).await;
    let mut bob = Device::open("bob", dir.path().join("bob"), &bootstrap).await;
    // Alice's phone, linked from her laptop and invited with her.
    let mut config = node_config("alice", &bootstrap);
    config.link = Some(alice.node.export_identity_key().unwrap());
    let mut phone = Device::open_with("alice-phone", dir.path().join("phone"), config).await;
    phone.node.publish().await.unwrap();
    // Inviting alice invites every device of hers.
    let group = group_with(&bob, &mut [&mut alice]).await;
    assert!(phone.wait_until(BOUND, |d| d.joined().is_some()).await);
    let phone_id = phone.node.device().device_id();
    let old_key = phone.node.device().signature_public_key();

    // The phone is lost with its store; the user sets up a phone with an empty store under
    // the old phone's id, with the identity key from the laptop.
    phone.node.shutdown().await;
    drop(phone);
    let restore = || {
        let mut config = node_config("alice", &bootstrap);
        config.link = Some(alice.node.export_identity_key().unwrap());
        config.restore_device = Some(phone_id);
        config
    };
    let mut phone =
        Device::reopen_with("alice-phone", dir.path().join("new-phone"), restore, BOUND).await;
    assert_eq!(phone.node.device().device_id(), phone_id);
    assert_ne!(phone.node.device().signature_public_key(), old_key);
    assert!(phone.node.groups().await.unwrap().is_empty());
    phone.node.publish().await.unwrap();
    assert_eq!(
        phone.node.join_own_groups().await.unwrap(),
        vec![group.clone()]
    );
    for member in [&mut alice, &mut bob] {
        let name = member.name.clone();
        assert!(
            member
                .wait_until(BOUND, |d| d.seen.iter().any(|e| matches!(
                    e,
                    Event::DeviceRejoined { replaced, .. } if replaced.len() == 1
                )))
                .await,
            "{name} sees the phone come back in place of its old leaf"
        );
    }
    let members = bob.node.members(&group).await.unwrap();
    assert_eq!(
        members.len(),
        3,
        "bob, alice's laptop, her phone: no dead leaf"
    );
    assert!(
        everyone_hears_everyone(&mut [&mut alice, &mut bob, &mut phone], &group).await,
        "the restored phone sends and receives"
    );
}
