//! Resolving what people type (`alice@1a2b3c4d`, or just `alice`) to verified users.

use std::collections::{BTreeMap, BTreeSet};

use crate::address::Address;
use crate::device::DeviceId;
use crate::display_name::DisplayName;
use crate::error::{Candidate, IdentityError};
use crate::identity_key::IdentityPublicKey;
use crate::user_id::UserId;
use crate::verification::VerifiedMember;

/// The known users of this device, built from [`VerifiedMember`]s (group members, contacts),
/// and resolution of addresses and names against them.
///
/// Resolution never picks silently: it returns the one user that matches, or
/// [`IdentityError::AmbiguousAddress`] / [`IdentityError::UnknownAddress`] listing the
/// candidates. Names match case-insensitively; fingerprints exactly.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    members: BTreeMap<(UserId, DeviceId), VerifiedMember>,
}

/// One user found by a [`Directory`], with every known device of theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    user_id: UserId,
    devices: Vec<VerifiedMember>,
}

impl ResolvedUser {
    /// The user.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// Every known device of the user, ordered by device id (never empty).
    pub fn devices(&self) -> &[VerifiedMember] {
        &self.devices
    }

    /// The user's identity public key.
    pub fn identity_public_key(&self) -> Option<&IdentityPublicKey> {
        self.devices
            .first()
            .map(VerifiedMember::identity_public_key)
    }

    /// The user's addresses (one per distinct display name of their devices).
    pub fn addresses(&self) -> Vec<Address> {
        let set: BTreeSet<Address> = self.devices.iter().map(VerifiedMember::address).collect();
        set.into_iter().collect()
    }
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a verified device, replacing an earlier entry for the same user and device.
    pub fn insert(&mut self, member: VerifiedMember) {
        self.members
            .insert((member.user_id(), member.device_id()), member);
    }

    /// Removes one device; returns it if it was known.
    pub fn remove_device(
        &mut self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Option<VerifiedMember> {
        self.members.remove(&(*user_id, *device_id))
    }

    /// Removes every device of a user; returns how many there were.
    pub fn remove_user(&mut self, user_id: &UserId) -> usize {
        let before = self.members.len();
        self.members.retain(|(user, _), _| user != user_id);
        before - self.members.len()
    }

    /// Number of known devices.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when no device is known.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Resolves what a person typed: `name@fingerprint` or a bare name.
    pub fn resolve(&self, query: &str) -> Result<ResolvedUser, IdentityError> {
        if query.contains('@') {
            let address: Address = query.parse()?;
            self.resolve_address(&address)
        } else {
            let name =
                DisplayName::new(query.trim()).map_err(|_| IdentityError::InvalidAddress {
                    reason: "not a valid display name",
                })?;
            self.resolve_name(&name)
        }
    }

    /// The one user with this address.
    pub fn resolve_address(&self, address: &Address) -> Result<ResolvedUser, IdentityError> {
        let name = address.name().folded();
        let fingerprint = address.fingerprint();
        self.pick(
            address.to_string(),
            |member| {
                member.display_name().folded() == name
                    && member.user_id().fingerprint() == fingerprint
            },
            |member| {
                member.display_name().folded() == name
                    || member.user_id().fingerprint() == fingerprint
            },
        )
    }

    /// The one user with this display name (on any of their devices).
    pub fn resolve_name(&self, name: &DisplayName) -> Result<ResolvedUser, IdentityError> {
        let folded = name.folded();
        self.pick(
            name.to_string(),
            |member| member.display_name().folded() == folded,
            |member| member.display_name().folded().starts_with(&folded),
        )
    }

    /// The user with this full id.
    pub fn resolve_user_id(&self, user_id: &UserId) -> Result<ResolvedUser, IdentityError> {
        self.pick(
            user_id.to_string(),
            |member| member.user_id() == *user_id,
            |_| false,
        )
    }

    fn pick(
        &self,
        query: String,
        matches: impl Fn(&VerifiedMember) -> bool,
        close: impl Fn(&VerifiedMember) -> bool,
    ) -> Result<ResolvedUser, IdentityError> {
        let mut users: BTreeMap<UserId, Vec<&VerifiedMember>> = BTreeMap::new();
        for member in self.members.values().filter(|member| matches(member)) {
            users.entry(member.user_id()).or_default().push(member);
        }
        let mut found = users.into_iter();
        match (found.next(), found.next()) {
            (Some((user_id, _)), None) => Ok(self.user(user_id)),
            (None, _) => Err(IdentityError::UnknownAddress {
                query,
                candidates: candidates(self.members.values().filter(|member| close(member))),
            }),
            (Some(first), Some(second)) => {
                let all = [first, second].into_iter().chain(found);
                Err(IdentityError::AmbiguousAddress {
                    query,
                    candidates: candidates(all.flat_map(|(_, members)| members)),
                })
            }
        }
    }

    fn user(&self, user_id: UserId) -> ResolvedUser {
        ResolvedUser {
            user_id,
            devices: self
                .members
                .range(
                    (user_id, DeviceId::from_bytes([0; 16]))
                        ..=(user_id, DeviceId::from_bytes([0xff; 16])),
                )
                .map(|(_, member)| member.clone())
                .collect(),
        }
    }
}

fn candidates<'a>(members: impl Iterator<Item = &'a VerifiedMember>) -> Vec<Candidate> {
    let set: BTreeSet<Candidate> = members
        .map(|member| Candidate {
            address: member.address(),
            user_id: member.user_id(),
        })
        .collect();
    set.into_iter().collect()
}
