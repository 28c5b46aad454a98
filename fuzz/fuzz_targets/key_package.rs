//! Key package validation, identity binding included: erin, alone in a live group, is asked to
//! add members from key packages that are real ones (dave's fresh and last-resort packages,
//! frank's) edited by the fuzzer, arbitrary bytes, or an edited one next to a genuine one.
//! A rejection is a peer error and changes nothing (same epoch, erin can still send); an
//! accepted package must be a genuine device's.
#![no_main]

use std::sync::LazyLock;

use core_identity::UserId;
use core_mls::{Event, GroupId, MlsError};
use libfuzzer_sys::fuzz_target;
use spacepanda_fuzz::{Device, DeviceState, Mutation, check_peer_error};

struct Fixture {
    erin: DeviceState,
    group: GroupId,
    epoch: u64,
    /// Real key packages and their owners.
    packages: Vec<Vec<u8>>,
    owners: Vec<UserId>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let mut erin = Device::new("erin");
    let group = erin.client.create_group().unwrap();
    let dave = Device::new("dave");
    let frank = Device::new("frank");
    Fixture {
        epoch: erin.client.epoch(&group).unwrap(),
        erin: erin.state(),
        group,
        packages: vec![
            dave.key_package(false),
            dave.key_package(true),
            frank.key_package(false),
        ],
        owners: vec![dave.identity.user_id(), frank.identity.user_id()],
    }
});

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let base = &fx.packages[usize::from(selector & 0x3f) % fx.packages.len()];
    let packages = match selector >> 6 {
        0 | 1 => vec![Mutation::apply(base, rest)],
        2 => vec![rest.to_vec()],
        _ => vec![Mutation::apply(base, rest), fx.packages[2].clone()],
    };
    let (mut erin, store) = fx.erin.open_with_store();
    match erin.add_members(&fx.group, &packages) {
        Ok(output) => {
            for event in &output.events {
                // Raw bytes may be any device's genuine key package (a seed from another
                // process is one); edits of a real package may only ever add its owner.
                if let (Event::MembersAdded { members, .. }, false) = (event, selector >> 6 == 2) {
                    for member in members {
                        assert!(
                            fx.owners.contains(&member.user_id()),
                            "an edited key package added someone who published none"
                        );
                    }
                }
            }
            assert_eq!(erin.epoch(&fx.group).unwrap(), fx.epoch + 1);
        }
        Err(error) => {
            // Next to frank's genuine package, an edit that left frank's package valid makes
            // the caller's list name one device twice: refused as the caller's mistake.
            let frank_twice = selector >> 6 == 3
                && matches!(&error, MlsError::AlreadyMember { user_id, .. } if *user_id == fx.owners[1]);
            if !frank_twice {
                check_peer_error(&error);
            }
            assert_eq!(
                erin.epoch(&fx.group).unwrap(),
                fx.epoch,
                "a rejected add moved the epoch"
            );
            assert!(
                store.dump().unwrap() == fx.erin.snapshot,
                "a rejected add changed the store"
            );
        }
    }
    erin.send(&fx.group, b"still alive").expect("erin can send");
});
