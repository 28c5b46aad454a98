//! Blinding keys and sealing values (the per-entry half of the format).

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::ByteReader;
use super::commitment::{CommitState, STATE_LEN, entry_term};
use super::keys::DerivedKeys;
use crate::{Key, StoreError, StoreResult};

const NONCE_LEN: usize = 24;
const BLINDED_SEGMENT_LEN: usize = 16;
const VALUE_VERSION: u8 = 2;
const AAD_LABEL: &[u8] = b"spacepanda sealed v2";
const COMMITMENT_AAD: &[u8] = b"spacepanda sealed v2 commitment";

/// A sealed value opened: the batch counter it was written in, its plain key and value.
pub(super) struct Opened {
    pub(super) counter: u64,
    pub(super) key: Key,
    pub(super) value: Vec<u8>,
}

/// The derived keys and the cipher made from them.
pub(super) struct Sealer {
    keys: DerivedKeys,
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub(super) fn new(keys: DerivedKeys) -> Self {
        let cipher = XChaCha20Poly1305::new(&keys.value_key.into());
        Self { keys, cipher }
    }

    pub(super) fn key_check(&self) -> &[u8; 32] {
        &self.keys.key_check
    }

    /// The stored key of `key` in `namespace`: the blinded namespace, then each blinded segment,
    /// chained so that equal segments under different parents blind differently.
    pub(super) fn blind(&self, namespace: &str, key: &Key) -> Key {
        let mut chain = *blake3::Hasher::new_keyed(&self.keys.blind_key)
            .update(&(namespace.len() as u64).to_le_bytes())
            .update(namespace.as_bytes())
            .finalize()
            .as_bytes();
        let mut blinded = Key::from_segment(chain.get(..BLINDED_SEGMENT_LEN).unwrap_or(&chain));
        for segment in key.segments() {
            chain = *blake3::Hasher::new_keyed(&self.keys.blind_key)
                .update(&chain)
                .update(&(segment.len() as u64).to_le_bytes())
                .update(segment)
                .finalize()
                .as_bytes();
            blinded.push(chain.get(..BLINDED_SEGMENT_LEN).unwrap_or(&chain));
        }
        blinded
    }

    /// The entry's term in the set digest.
    pub(super) fn term(&self, stored_key: &Key, stored_value: &[u8]) -> [u8; 32] {
        entry_term(&self.keys.mac_key, stored_key, stored_value)
    }

    /// Seals `value` of `key`, written by batch `counter`.
    pub(super) fn seal(
        &self,
        namespace: &str,
        stored_key: &Key,
        key: &Key,
        value: &[u8],
        counter: u64,
    ) -> StoreResult<Vec<u8>> {
        let key_len = u32::try_from(key.as_bytes().len()).map_err(|_| StoreError::InvalidKey {
            reason: "longer than MAX_KEY_LEN",
        })?;
        let mut plaintext = Zeroizing::new(Vec::with_capacity(
            8 + 4 + key.as_bytes().len() + value.len(),
        ));
        plaintext.extend_from_slice(&counter.to_be_bytes());
        plaintext.extend_from_slice(&key_len.to_be_bytes());
        plaintext.extend_from_slice(key.as_bytes());
        plaintext.extend_from_slice(value);
        self.encrypt(&plaintext, &value_aad(namespace, stored_key))
    }

    /// Opens a stored value of `namespace`.
    pub(super) fn open(
        &self,
        namespace: &str,
        stored_key: &Key,
        sealed: &[u8],
    ) -> StoreResult<Opened> {
        let corrupted = |reason| StoreError::corrupted(namespace, reason);
        let plaintext = self
            .decrypt(sealed, &value_aad(namespace, stored_key))
            .map_err(corrupted)?;
        let mut reader = ByteReader(&plaintext);
        let counter = reader
            .array::<8>()
            .map(u64::from_be_bytes)
            .ok_or_else(|| corrupted("sealed counter missing"))?;
        let key_len = reader
            .u32()
            .ok_or_else(|| corrupted("sealed key length missing"))?;
        let key_bytes = usize::try_from(key_len)
            .ok()
            .and_then(|len| reader.take(len))
            .ok_or_else(|| corrupted("sealed key truncated"))?;
        let key = Key::from_encoded(key_bytes.to_vec())
            .map_err(|_| corrupted("sealed key is not a valid key"))?;
        Ok(Opened {
            counter,
            key,
            value: reader.0.to_vec(),
        })
    }

    pub(super) fn seal_commitment(&self, state: &CommitState) -> StoreResult<Vec<u8>> {
        self.encrypt(&state.encode(), COMMITMENT_AAD)
    }

    pub(super) fn open_commitment(&self, sealed: &[u8]) -> Result<CommitState, &'static str> {
        let plaintext = self.decrypt(sealed, COMMITMENT_AAD)?;
        if plaintext.len() != STATE_LEN {
            return Err("commitment record has the wrong length");
        }
        CommitState::decode(&plaintext).ok_or("commitment record has the wrong length")
    }

    /// `version ‖ nonce ‖ XChaCha20-Poly1305(value_key, nonce, aad, plaintext)`.
    fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> StoreResult<Vec<u8>> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| StoreError::InvalidArgument {
                reason: "value too large to encrypt",
            })?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VALUE_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    fn decrypt(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, &'static str> {
        let mut reader = ByteReader(sealed);
        match reader.u8() {
            Some(VALUE_VERSION) => {}
            Some(_) => return Err("unknown sealed value version"),
            None => return Err("empty sealed value"),
        }
        let nonce = reader
            .array::<NONCE_LEN>()
            .ok_or("sealed value truncated")?;
        self.cipher
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: reader.0, aad })
            .map(Zeroizing::new)
            .map_err(|_| "authentication failed")
    }
}

fn value_aad(namespace: &str, stored_key: &Key) -> Vec<u8> {
    let mut aad =
        Vec::with_capacity(AAD_LABEL.len() + 8 + namespace.len() + stored_key.as_bytes().len());
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(&(namespace.len() as u64).to_le_bytes());
    aad.extend_from_slice(namespace.as_bytes());
    aad.extend_from_slice(stored_key.as_bytes());
    aad
}
