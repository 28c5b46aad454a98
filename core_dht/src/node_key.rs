//! The libp2p identity of a device's node, kept in the device's (sealed) store so that the
//! peer id its user record lists stays the same across restarts.
//!
//! Storage: namespace `dht_node`, key `["ed25519"]`, the 32 secret bytes. It is a separate key
//! from the device's MLS signature key: the transport's key signs noise handshakes, never
//! anything of MLS or the directory.

use libp2p::identity::Keypair;
use spacepanda_core::{Key, SharedStore, Transaction};
use zeroize::Zeroizing;

use crate::error::{DhtError, DhtResult};

/// The device store namespace of the node key.
pub const NODE_KEY_NAMESPACE: &str = "dht_node";

/// The node keypair kept in `store`, or a new one from `fresh`, kept there first (one
/// transaction). Pass `Keypair::generate_ed25519` in production; a test passes a seeded key.
pub fn load_or_create_node_keypair(
    store: &SharedStore,
    fresh: impl FnOnce() -> Keypair,
) -> DhtResult<Keypair> {
    let key = Key::from_segment("ed25519");
    let mut txn = Transaction::begin(store);
    if let Some(bytes) = txn.get(NODE_KEY_NAMESPACE, &key)? {
        let mut secret = Zeroizing::new(bytes);
        return Keypair::ed25519_from_bytes(secret.as_mut_slice()).map_err(|e| {
            DhtError::CorruptedOwnRecord {
                what: "node key",
                reason: e.to_string(),
            }
        });
    }
    let keypair = fresh();
    let ed25519 = keypair
        .clone()
        .try_into_ed25519()
        .map_err(|_| DhtError::Transport {
            reason: "the node key must be ed25519".into(),
        })?;
    let secret = Zeroizing::new(ed25519.secret().as_ref().to_vec());
    txn.put(NODE_KEY_NAMESPACE, key, secret.to_vec())?;
    txn.commit()?;
    Ok(keypair)
}
