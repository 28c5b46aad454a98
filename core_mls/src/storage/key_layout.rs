//! Where every piece of OpenMLS state lives: namespaces, key segments, and how OpenMLS's serde
//! keys become key segments.
//!
//! Everything of one group is under `mls / ["g", group_id]`, so listing, deleting and
//! snapshotting a group are prefix operations. State keyed by something other than a group
//! (key packages, signature keys, PSKs, leaf encryption keys) has its own namespace.

use serde::Serialize;
use serde_json::Value;
use spacepanda_core::Key;

use crate::error::MlsError;

/// Per-group OpenMLS state: `["g", group_id, label, sub-key…]`.
pub(crate) const GROUP_NAMESPACE: &str = "mls";
/// Key package bundles (with their private init keys): `[hash_ref]`.
pub(crate) const KEY_PACKAGE_NAMESPACE: &str = "mls_key_package";
/// Signature key pairs: `[public_key]`.
pub(crate) const SIGNATURE_KEY_NAMESPACE: &str = "mls_signature_key";
/// Pre-shared keys: `[psk_id]` (the PSK id is a structured value, stored in its JSON form).
pub(crate) const PSK_NAMESPACE: &str = "mls_psk";
/// HPKE key pairs of our own leaf updates: `[public_key]`.
pub(crate) const ENCRYPTION_KEY_NAMESPACE: &str = "mls_encryption_key";
/// The storage format record: `["format"]`.
pub(crate) const META_NAMESPACE: &str = "mls_meta";

/// First segment of every group key.
const GROUP_SEGMENT: &[u8] = b"g";

/// Labels under a group's prefix (one segment each).
pub(crate) mod label {
    pub(crate) const JOIN_CONFIG: &str = "join_config";
    pub(crate) const OWN_LEAF_NODE: &str = "own_leaf_node";
    pub(crate) const PROPOSAL: &str = "proposal";
    pub(crate) const PROPOSAL_INDEX: &str = "proposal_index";
    pub(crate) const TREE: &str = "tree";
    pub(crate) const INTERIM_TRANSCRIPT_HASH: &str = "interim_transcript_hash";
    pub(crate) const CONTEXT: &str = "context";
    pub(crate) const CONFIRMATION_TAG: &str = "confirmation_tag";
    pub(crate) const GROUP_STATE: &str = "group_state";
    pub(crate) const MESSAGE_SECRETS: &str = "message_secrets";
    pub(crate) const RESUMPTION_PSK_STORE: &str = "resumption_psk_store";
    pub(crate) const OWN_LEAF_INDEX: &str = "own_leaf_index";
    pub(crate) const GROUP_EPOCH_SECRETS: &str = "group_epoch_secrets";
    pub(crate) const EPOCH_KEY_PAIRS: &str = "epoch_key_pairs";
}

/// The key of the storage format record in [`META_NAMESPACE`].
pub(crate) fn format_key() -> Key {
    Key::from_segment("format")
}

/// The prefix of every group: `["g"]`.
pub(crate) fn all_groups_prefix() -> Key {
    Key::from_segment(GROUP_SEGMENT)
}

/// The prefix of everything stored for the group with raw id `group_id`: `["g", group_id]`.
pub(crate) fn group_prefix(group_id: &[u8]) -> Key {
    all_groups_prefix().with(group_id)
}

/// `["g", group_id, label]`.
pub(crate) fn group_key(group_id: &[u8], label: &str) -> Key {
    group_prefix(group_id).with(label)
}

/// The raw group id of a key under [`all_groups_prefix`], if it is one.
pub(crate) fn group_id_of(key: &Key) -> Option<&[u8]> {
    let mut segments = key.segments();
    (segments.next()? == GROUP_SEGMENT).then_some(())?;
    segments.next()
}

/// The bytes of a key that OpenMLS serialises as a byte string (group ids, hash references,
/// public keys): `VLBytes` and its newtype/one-field wrappers.
///
/// Raw bytes rather than the serde form make keys short, make a group's prefix computable from
/// `GroupId::as_slice()` by the layers above, and keep the layout independent of the codec. A
/// key of any other shape is a bug (a new OpenMLS type), reported rather than guessed at.
pub(crate) fn byte_string<K: Serialize + ?Sized>(key: &K) -> Result<Vec<u8>, MlsError> {
    let value = serde_json::to_value(key).map_err(|_| MlsError::Internal {
        what: "an OpenMLS storage key does not serialise",
    })?;
    unwrap_bytes(value).ok_or(MlsError::Internal {
        what: "an OpenMLS storage key is not a byte string",
    })
}

/// An OpenMLS key that is a plain number (the epoch), big-endian so keys sort by number.
pub(crate) fn number<K: Serialize + ?Sized>(key: &K) -> Result<[u8; 8], MlsError> {
    let value = serde_json::to_value(key).map_err(|_| MlsError::Internal {
        what: "an OpenMLS storage key does not serialise",
    })?;
    unwrap_number(value)
        .map(u64::to_be_bytes)
        .ok_or(MlsError::Internal {
            what: "an OpenMLS epoch key is not a number",
        })
}

/// A structured OpenMLS key (the PSK id) as its canonical JSON bytes. Struct fields serialise
/// in declaration order, so equal ids give equal bytes.
pub(crate) fn structured<K: Serialize + ?Sized>(key: &K) -> Result<Vec<u8>, MlsError> {
    serde_json::to_vec(key).map_err(|_| MlsError::Internal {
        what: "an OpenMLS storage key does not serialise",
    })
}

fn unwrap_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(|item| item.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect(),
        Value::Object(map) if map.len() == 1 => unwrap_bytes(map.into_iter().next()?.1),
        _ => None,
    }
}

fn unwrap_number(value: Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::Object(map) if map.len() == 1 => unwrap_number(map.into_iter().next()?.1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use openmls::prelude::{GroupEpoch, GroupId};

    #[test]
    fn group_id_is_its_raw_bytes() {
        let id = GroupId::from_slice(b"\x00team\xff");
        assert_eq!(byte_string(&id).unwrap(), b"\x00team\xff");
        assert_eq!(byte_string(&GroupId::from_slice(b"")).unwrap(), b"");
    }

    #[test]
    fn epoch_is_big_endian() {
        assert_eq!(
            number(&GroupEpoch::from(258u64)).unwrap(),
            258u64.to_be_bytes()
        );
    }

    #[test]
    fn non_byte_keys_are_reported() {
        assert!(matches!(
            byte_string(&("a", 1)),
            Err(MlsError::Internal { .. })
        ));
        assert!(matches!(number(&"x"), Err(MlsError::Internal { .. })));
    }

    #[test]
    fn group_keys_share_the_group_prefix() {
        let key = group_key(b"abc", label::TREE);
        assert!(key.starts_with(&group_prefix(b"abc")));
        assert!(!key.starts_with(&group_prefix(b"ab")));
        assert_eq!(group_id_of(&key), Some(&b"abc"[..]));
        assert_eq!(group_id_of(&Key::from_segment("x")), None);
    }
}
