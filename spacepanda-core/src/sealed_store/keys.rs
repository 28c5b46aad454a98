//! The master key and the keys derived from it.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::header::KdfParams;
use crate::{StoreError, StoreResult};

const CONTEXT_VALUE_KEY: &str = "spacepanda sealed store v2 value encryption key";
const CONTEXT_BLIND_KEY: &str = "spacepanda sealed store v2 key blinding key";
const CONTEXT_KEY_CHECK: &str = "spacepanda sealed store v2 key check value";
const CONTEXT_MAC_KEY: &str = "spacepanda sealed store v2 entry set commitment key";

/// 32 bytes of key material supplied by the application (for example from the OS keychain).
/// Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The key bytes, for the application to store in its keychain.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Keys derived from the master key, independent of each other (BLAKE3 `derive_key` under
/// distinct contexts), so that no one of them reveals another.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(super) struct DerivedKeys {
    pub(super) value_key: [u8; 32],
    pub(super) blind_key: [u8; 32],
    pub(super) key_check: [u8; 32],
    pub(super) mac_key: [u8; 32],
}

impl DerivedKeys {
    pub(super) fn from_master(master: &[u8; 32]) -> Self {
        Self {
            value_key: blake3::derive_key(CONTEXT_VALUE_KEY, master),
            blind_key: blake3::derive_key(CONTEXT_BLIND_KEY, master),
            key_check: blake3::derive_key(CONTEXT_KEY_CHECK, master),
            mac_key: blake3::derive_key(CONTEXT_MAC_KEY, master),
        }
    }
}

/// Argon2id(passphrase, salt, params). The caller has checked `params` against the bounds.
pub(super) fn derive_master(
    passphrase: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> StoreResult<Zeroizing<[u8; 32]>> {
    let invalid = |_| StoreError::InvalidArgument {
        reason: "Argon2id rejected the parameters",
    };
    let argon = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(32),
        )
        .map_err(invalid)?,
    );
    let mut master = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, master.as_mut())
        .map_err(invalid)?;
    Ok(master)
}
