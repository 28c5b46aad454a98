//! Where records live: keys derived from the subject, so a record is self-certifying.

use std::fmt;

use core_identity::{DeviceId, DisplayName, Fingerprint, UserId};

/// A directory key: BLAKE3 of a versioned label and the record's subject.
///
/// The subject is the signer (a user id is the hash of the identity key; a device id is
/// certified by it), so a node can check that a record sits where its signer may put it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey([u8; 32]);

impl RecordKey {
    /// The user record of `user`: `H("spacepanda/user/v1" ‖ user_id)`.
    pub fn user(user: &UserId) -> Self {
        Self::derive(b"spacepanda/user/v1", &[user.as_bytes()])
    }

    /// The key package record of one device:
    /// `H("spacepanda/kp/v1" ‖ user_id ‖ device_id)`.
    pub fn key_packages(user: &UserId, device: &DeviceId) -> Self {
        Self::derive(b"spacepanda/kp/v1", &[user.as_bytes(), device.as_bytes()])
    }

    /// The claims on one device's key packages:
    /// `H("spacepanda/claim/v1" ‖ user_id ‖ device_id)`.
    pub fn claims(user: &UserId, device: &DeviceId) -> Self {
        Self::derive(
            b"spacepanda/claim/v1",
            &[user.as_bytes(), device.as_bytes()],
        )
    }

    /// The users named `name` (compared case-insensitively, as core_identity resolves):
    /// `H("spacepanda/name/v1" ‖ lowercase name)`.
    pub fn name(name: &DisplayName) -> Self {
        Self::derive(b"spacepanda/name/v1", &[name_bytes(name).as_bytes()])
    }

    /// The users with the address `name@fingerprint`:
    /// `H("spacepanda/addr/v1" ‖ fingerprint ‖ lowercase name)`. Filling it with impostors
    /// takes a 2³²-work search per impostor, where filling a bare name's index takes none.
    pub fn address(name: &DisplayName, fingerprint: &Fingerprint) -> Self {
        Self::derive(
            b"spacepanda/addr/v1",
            &[fingerprint.as_bytes(), name_bytes(name).as_bytes()],
        )
    }

    fn derive(label: &[u8], parts: &[&[u8]]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(label);
        for part in parts {
            hasher.update(part);
        }
        Self(*hasher.finalize().as_bytes())
    }

    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key of a Kademlia record, if it is 32 bytes.
    pub(crate) fn from_kad(key: &libp2p::kad::RecordKey) -> Option<Self> {
        key.as_ref().try_into().ok().map(Self)
    }

    /// As a Kademlia record key.
    pub fn to_kad(&self) -> libp2p::kad::RecordKey {
        libp2p::kad::RecordKey::new(&self.0)
    }
}

fn name_bytes(name: &DisplayName) -> String {
    name.as_str().to_lowercase()
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordKey({})", hex::encode(&self.0[..8]))
    }
}
