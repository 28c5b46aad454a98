//! Who is in a group, as devices: the verified device at every leaf of the group's current tree.
//!
//! Why a cache: sends need the other members' devices, and a commit that adds needs every
//! member's device to refuse one already there. Verifying 1 000 leaves costs milliseconds even
//! when every credential is already in the [`MemberCache`], mostly in copying each leaf out of
//! OpenMLS; membership only changes with the tree, so the list is built once per tree.
//!
//! The cache is keyed by the epoch *and* the tree hash: after a rollback the same epoch number
//! can hold another tree (another branch), and the tree hash tells them apart. The client also
//! drops a group's roster whenever it reloads the group.

use openmls::prelude::MlsGroup;

use crate::error::MlsError;
use crate::events::DeviceAddress;
use crate::member_verification::MemberCache;

/// The verified devices of one state of a group.
#[derive(Debug, Clone)]
pub(crate) struct Roster {
    epoch: u64,
    tree_hash: Vec<u8>,
    own_leaf: u32,
    /// `(leaf index, device)` in leaf order.
    devices: Vec<(u32, DeviceAddress)>,
}

impl Roster {
    /// Verifies every leaf of `group`'s current tree (through `cache`). Fails like
    /// [`MemberCache::verify`] on the first leaf that does not carry a valid SpacePanda binding.
    pub(crate) fn build(group: &MlsGroup, cache: &mut MemberCache) -> Result<Self, MlsError> {
        let public = group.public_group();
        let devices = public
            .treesync()
            .full_leaves()
            .map(|(index, leaf)| {
                cache
                    .device_of(leaf.credential(), leaf.signature_key().as_slice())
                    .map(|device| (index.u32(), device))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            epoch: group.epoch().as_u64(),
            tree_hash: public.group_context().tree_hash().to_vec(),
            own_leaf: group.own_leaf_index().u32(),
            devices,
        })
    }

    /// Whether this roster describes `group` as it is now.
    pub(crate) fn is_of(&self, group: &MlsGroup) -> bool {
        self.epoch == group.epoch().as_u64()
            && self.tree_hash == group.public_group().group_context().tree_hash()
    }

    /// The devices of every leaf but this device's own.
    pub(crate) fn others(&self) -> Vec<DeviceAddress> {
        self.devices
            .iter()
            .filter(|(leaf, _)| *leaf != self.own_leaf)
            .map(|(_, device)| *device)
            .collect()
    }

    /// Whether `device` is at some leaf (this device's own included).
    pub(crate) fn contains(&self, device: &DeviceAddress) -> bool {
        self.devices.iter().any(|(_, d)| d == device)
    }
}

#[cfg(test)]
mod tests {
    use crate::atomicity_tests::{device, key_package};
    use crate::{DeviceAddress, MlsError};

    fn address(client: &crate::MlsClient) -> DeviceAddress {
        DeviceAddress {
            user_id: client.device.user_id(),
            device_id: client.device.device_id(),
        }
    }

    #[test]
    fn a_roster_lists_every_leaf_and_follows_the_tree() -> Result<(), MlsError> {
        let (mut alice, _) = device("alice", 1);
        let (bob, _) = device("bob", 2);
        let group = alice.create_group()?;
        assert!(alice.other_member_devices(&group)?.is_empty());
        let me = address(&alice);
        assert!(alice.roster(&group)?.contains(&me));
        assert!(!alice.roster(&group)?.contains(&address(&bob)));

        alice.add_members(&group, &[key_package(&bob)?.1])?;
        assert_eq!(alice.other_member_devices(&group)?, vec![address(&bob)]);
        assert!(alice.roster(&group)?.contains(&address(&bob)));

        // Another group at the same epoch number has another tree: a roster is of one tree.
        let other = alice.create_group()?;
        let epoch_of_other = alice.epoch(&other)?;
        let kept = alice.roster(&other)?.clone();
        let bob_kp = key_package(&bob)?.1;
        alice.add_members(&other, &[bob_kp])?;
        assert_eq!(alice.epoch(&other)?, epoch_of_other + 1);
        assert!(!kept.is_of(alice.group(&other)?));
        let now = alice.roster(&other)?.clone();
        assert!(now.is_of(alice.group(&other)?));
        let first = alice.roster(&group)?.clone();
        assert!(!first.is_of(alice.group(&other)?));
        Ok(())
    }
}
