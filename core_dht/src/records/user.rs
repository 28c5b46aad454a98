//! The user record: a user's identity key, display name and devices, signed by the identity
//! key, at `H("spacepanda/user/v1" ‖ user_id)`.

use core_identity::{
    DisplayName, IdentityPublicKey, SpacePandaCredential, UserId, VerifiedMember, verify_credential,
};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::validation::Checks;
use super::{Lifetime, RecordKey, WireEntry, decode_body, encode_body};
use crate::error::Rejection;

/// Most devices one user record lists.
pub const MAX_DEVICES: usize = 16;
/// Most address hints per device.
pub const MAX_ADDRESSES_PER_DEVICE: usize = 8;
const MAX_ADDRESS_LEN: usize = 256;

#[derive(Serialize, Deserialize)]
struct UserBody {
    seq: u64,
    issued_at: u64,
    expires_at: u64,
    display_name: String,
    devices: Vec<UserBodyDevice>,
}

/// One device as a user record lists it (wire form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserBodyDevice {
    /// The device's `SpacePandaCredential` (its certificate by the identity key).
    #[serde(with = "serde_bytes")]
    pub(crate) credential: Vec<u8>,
    /// Its libp2p peer id.
    #[serde(with = "serde_bytes")]
    pub(crate) peer_id: Vec<u8>,
    /// Where it may be reached (multiaddr bytes).
    pub(crate) addresses: Vec<serde_bytes::ByteBuf>,
}

impl UserBodyDevice {
    /// The wire form of a device.
    pub(crate) fn new(credential: Vec<u8>, peer_id: PeerId, addresses: &[Multiaddr]) -> Self {
        Self {
            credential,
            peer_id: peer_id.to_bytes(),
            addresses: addresses
                .iter()
                .take(MAX_ADDRESSES_PER_DEVICE)
                .map(|a| serde_bytes::ByteBuf::from(a.to_vec()))
                .collect(),
        }
    }
}

/// A user's devices, as its identity key signed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user's identity key (the record's signer).
    pub identity_key: IdentityPublicKey,
    /// The user.
    pub user_id: UserId,
    /// The user's display name.
    pub display_name: DisplayName,
    /// Every device of the user, each certified by the identity key.
    pub devices: Vec<DeviceRecord>,
    /// Version of the record: a higher one replaces a lower one, never the reverse.
    pub seq: u64,
    /// When it was signed, and until when it is valid.
    pub lifetime: Lifetime,
    pub(crate) entry: WireEntry,
}

/// One device of a [`UserRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device's verified identity (user, device id, MLS signature key, name).
    pub member: VerifiedMember,
    /// The libp2p peer the device runs as.
    pub peer_id: PeerId,
    /// Where the device was last reachable (hints; the DHT's routing finds it otherwise).
    pub addresses: Vec<Multiaddr>,
    pub(crate) credential: Vec<u8>,
}

/// The body of a user record.
pub(crate) fn user_body(
    display_name: &DisplayName,
    devices: Vec<UserBodyDevice>,
    seq: u64,
    lifetime: Lifetime,
) -> Vec<u8> {
    encode_body(&UserBody {
        seq,
        issued_at: lifetime.issued_at.unix_millis(),
        expires_at: lifetime.expires_at.unix_millis(),
        display_name: display_name.as_str().to_owned(),
        devices,
    })
}

impl UserRecord {
    /// Checks one signed entry found under `key`.
    pub(crate) fn check(
        key: &RecordKey,
        entry: WireEntry,
        checks: &Checks,
    ) -> Result<Self, Rejection> {
        let signer = entry.verified_signer(super::RecordKind::User, key)?;
        let identity_key =
            IdentityPublicKey::from_bytes(&signer).map_err(|_| Rejection::BadSignature)?;
        let user_id = identity_key.user_id();
        if RecordKey::user(&user_id) != *key {
            return Err(Rejection::KeyMismatch);
        }
        let body: UserBody = decode_body(&entry.body)?;
        let lifetime = Lifetime::from_millis(body.issued_at, body.expires_at).check(checks)?;
        let display_name =
            DisplayName::new(&body.display_name).map_err(|e| Rejection::Malformed {
                reason: format!("display name: {e}"),
            })?;
        if body.devices.len() > MAX_DEVICES {
            return Err(Rejection::TooMany {
                what: "devices",
                count: body.devices.len(),
                max: MAX_DEVICES,
            });
        }
        let mut devices = Vec::with_capacity(body.devices.len());
        for device in body.devices {
            devices.push(check_device(device, &identity_key)?);
        }
        Ok(Self {
            identity_key,
            user_id,
            display_name,
            devices,
            seq: body.seq,
            lifetime,
            entry,
        })
    }
}

fn check_device(
    device: UserBodyDevice,
    identity_key: &IdentityPublicKey,
) -> Result<DeviceRecord, Rejection> {
    let bad = |reason: String| Rejection::BadIdentity { reason };
    let credential = SpacePandaCredential::from_bytes(&device.credential)
        .map_err(|e| bad(format!("device credential: {e}")))?;
    if credential.identity_public_key() != identity_key {
        return Err(bad("a device certified by another identity key".into()));
    }
    let member = verify_credential(&credential, credential.certificate().signature_public_key())
        .map_err(|e| bad(format!("device certificate: {e}")))?;
    let peer_id = PeerId::from_bytes(&device.peer_id).map_err(|e| Rejection::Malformed {
        reason: format!("peer id: {e}"),
    })?;
    if device.addresses.len() > MAX_ADDRESSES_PER_DEVICE {
        return Err(Rejection::TooMany {
            what: "addresses of a device",
            count: device.addresses.len(),
            max: MAX_ADDRESSES_PER_DEVICE,
        });
    }
    let mut addresses = Vec::with_capacity(device.addresses.len());
    for address in device.addresses {
        if address.len() > MAX_ADDRESS_LEN {
            return Err(Rejection::Oversized {
                len: address.len(),
                max: MAX_ADDRESS_LEN,
            });
        }
        addresses.push(Multiaddr::try_from(address.into_vec()).map_err(|e| {
            Rejection::Malformed {
                reason: format!("device address: {e}"),
            }
        })?);
    }
    Ok(DeviceRecord {
        member,
        peer_id,
        addresses,
        credential: device.credential,
    })
}
