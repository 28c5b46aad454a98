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
