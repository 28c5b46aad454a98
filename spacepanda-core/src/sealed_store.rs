//! Encryption at rest: a [`KeyValueStore`] wrapper that seals values and blinds keys.
//!
//! Format (version 1), all under the wrapped store's namespaces of the same name:
//! - stored key: each segment `sᵢ` of the plain key becomes the first 16 bytes of
//!   `hᵢ = BLAKE3-keyed(blind_key, hᵢ₋₁ ‖ len(sᵢ) ‖ sᵢ)`, with `h₀ = BLAKE3-keyed(blind_key,
//!   len(ns) ‖ ns)`. Chaining hides equal segments under different parents; blinding segment by
//!   segment keeps whole-segment prefix scans as index scans in the wrapped store.
//! - stored value: `0x01 ‖ nonce(24) ‖ XChaCha20-Poly1305(value_key, nonce, aad, u32(len key) ‖
//!   plain key ‖ value)` with `aad = "spacepanda sealed v1" ‖ len(ns) ‖ ns ‖ stored key`: a value
//!   copied to another key or namespace fails authentication.
//! - header (clear, namespace [`HEADER_NAMESPACE`]): format version, how the master key is made
//!   (Argon2id with salt and parameters, or raw), and a key-check value, so a wrong key is
//!   reported at open as [`StoreError::WrongKey`].
//!
//! `value_key`, `blind_key` and the key-check value are derived from the master key with
//! BLAKE3's `derive_key` under distinct contexts.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{Key, KeyValueStore, StoreError, StoreResult, WriteBatch, WriteOp};

/// Namespace of the clear header record in the wrapped store. Not usable through the
/// sealed store itself.
pub const HEADER_NAMESPACE: &str = "sealed_store_header";

const FORMAT_VERSION: u32 = 1;
const HEADER_MAGIC: &[u8; 8] = b"SPSEALED";
const HEADER_LEN: usize = 8 + 4 + 1 + 12 + SALT_LEN + 32;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const BLINDED_SEGMENT_LEN: usize = 16;
const VALUE_VERSION: u8 = 1;
const AAD_LABEL: &[u8] = b"spacepanda sealed v1";

const CONTEXT_VALUE_KEY: &str = "spacepanda sealed store v1 value encryption key";
const CONTEXT_BLIND_KEY: &str = "spacepanda sealed store v1 key blinding key";
const CONTEXT_KEY_CHECK: &str = "spacepanda sealed store v1 key check value";

const KDF_RAW: u8 = 1;
const KDF_ARGON2ID: u8 = 2;

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

/// Argon2id cost parameters for a passphrase-derived master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// Upper bounds accepted from a header on disk: a stolen or planted file must not be able to
    /// make `open` allocate gigabytes or spin for minutes.
    const MAX_MEMORY_KIB: u32 = 1 << 20;
    const MAX_ITERATIONS: u32 = 64;
    const MAX_PARALLELISM: u32 = 16;

    /// Cheap parameters for tests and benchmarks only (8 MiB, 1 pass).
    pub const INSECURE_FOR_TESTS: Self = Self {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };

    fn within_bounds(self) -> bool {
        (8..=Self::MAX_MEMORY_KIB).contains(&self.memory_kib)
            && (1..=Self::MAX_ITERATIONS).contains(&self.iterations)
            && (1..=Self::MAX_PARALLELISM).contains(&self.parallelism)
    }
}

impl Default for KdfParams {
    /// OWASP's recommended Argon2id setting: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Keys derived from the master key.
#[derive(Zeroize, ZeroizeOnDrop)]
struct DerivedKeys {
    value_key: [u8; 32],
    blind_key: [u8; 32],
    key_check: [u8; 32],
}

impl DerivedKeys {
    fn from_master(master: &[u8; 32]) -> Self {
        Self {
            value_key: blake3::derive_key(CONTEXT_VALUE_KEY, master),
            blind_key: blake3::derive_key(CONTEXT_BLIND_KEY, master),
            key_check: blake3::derive_key(CONTEXT_KEY_CHECK, master),
        }
    }
}

/// How the master key of a store is made, as recorded in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySource {
    Raw,
    Passphrase {
        params: KdfParams,
        salt: [u8; SALT_LEN],
    },
}

struct Header {
    source: KeySource,
    key_check: [u8; 32],
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(HEADER_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        let (kind, params, salt) = match self.source {
            KeySource::Raw => (
                KDF_RAW,
                KdfParams {
                    memory_kib: 0,
                    iterations: 0,
                    parallelism: 0,
                },
                [0u8; SALT_LEN],
            ),
            KeySource::Passphrase { params, salt } => (KDF_ARGON2ID, params, salt),
        };
        out.push(kind);
        out.extend_from_slice(&params.memory_kib.to_be_bytes());
        out.extend_from_slice(&params.iterations.to_be_bytes());
        out.extend_from_slice(&params.parallelism.to_be_bytes());
        out.extend_from_slice(&salt);
        out.extend_from_slice(&self.key_check);
        out
    }

    fn decode(bytes: &[u8]) -> StoreResult<Self> {
        let corrupted = |reason| StoreError::corrupted(HEADER_NAMESPACE, reason);
        let mut reader = ByteReader(bytes);
        if reader.take(HEADER_MAGIC.len()) != Some(&HEADER_MAGIC[..]) {
            return Err(corrupted("header magic missing"));
        }
        let version = reader.u32().ok_or_else(|| corrupted("header truncated"))?;
        if version != FORMAT_VERSION {
            return Err(StoreError::UnsupportedFormat {
                what: "sealed store header",
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let truncated = || corrupted("header truncated");
        let kind = reader.u8().ok_or_else(truncated)?;
        let params = KdfParams {
            memory_kib: reader.u32().ok_or_else(truncated)?,
            iterations: reader.u32().ok_or_else(truncated)?,
            parallelism: reader.u32().ok_or_else(truncated)?,
        };
        let salt = reader.array::<SALT_LEN>().ok_or_else(truncated)?;
        let key_check = reader.array::<32>().ok_or_else(truncated)?;
        if !reader.0.is_empty() {
            return Err(corrupted("header has trailing bytes"));
        }
        let source = match kind {
            KDF_RAW => KeySource::Raw,
            KDF_ARGON2ID if params.within_bounds() => KeySource::Passphrase { params, salt },
            KDF_ARGON2ID => {
                return Err(corrupted("header key derivation parameters out of bounds"));
            }
            _ => return Err(corrupted("header names an unknown key derivation")),
        };
        Ok(Self { source, key_check })
    }
}

struct ByteReader<'a>(&'a [u8]);

impl<'a> ByteReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array::<4>().map(u32::from_be_bytes)
    }
}

/// Encrypts every value and blinds every key of the store it wraps. See the
/// [module docs](self) for the format.
///
/// Opening creates the header on first use; afterwards only the same passphrase (or raw key)
/// opens it, and anything else is [`StoreError::WrongKey`]. A value that was tampered with,
/// truncated, or moved to another key reads as [`StoreError::Corrupted`].
///
/// ```
/// use std::sync::Arc;
/// use spacepanda_core::{KdfParams, Key, KeyValueStore, MemoryStore, SealedStore, StoreError};
///
/// let inner = Arc::new(MemoryStore::new());
/// let params = KdfParams::INSECURE_FOR_TESTS; // use KdfParams::default() in production
/// let sealed = SealedStore::open_with_passphrase(inner.clone(), b"correct horse", params)?;
/// let mut batch = spacepanda_core::WriteBatch::new();
/// batch.put("notes", Key::from_segment("k"), b"secret".to_vec());
/// sealed.apply(batch)?;
/// assert_eq!(sealed.get("notes", &Key::from_segment("k"))?, Some(b"secret".to_vec()));
///
/// let wrong = SealedStore::open_with_passphrase(inner, b"wrong", params);
/// assert!(matches!(wrong, Err(StoreError::WrongKey)));
/// # Ok::<(), StoreError>(())
/// ```
pub struct SealedStore<S> {
    inner: S,
    keys: DerivedKeys,
    cipher: XChaCha20Poly1305,
}

impl<S> fmt::Debug for SealedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedStore").finish_non_exhaustive()
    }
}

impl<S: KeyValueStore> SealedStore<S> {
    /// Opens `inner` with a master key derived from `passphrase` by Argon2id. A new store is
    /// created with `params_if_new`; an existing store uses the parameters in its header.
    pub fn open_with_passphrase(
        inner: S,
        passphrase: &[u8],
        params_if_new: KdfParams,
    ) -> StoreResult<Self> {
        match read_header(&inner)? {
            Some(header) => {
                let KeySource::Passphrase { params, salt } = header.source else {
                    return Err(StoreError::WrongKey);
                };
                let master = derive_master(passphrase, &salt, params)?;
                Self::with_master(inner, &master, &header)
            }
            None => {
                if !params_if_new.within_bounds() {
                    return Err(StoreError::InvalidArgument {
                        reason: "Argon2id parameters out of bounds (memory 8 KiB..1 GiB, 1..64 passes, 1..16 lanes)",
                    });
                }
                let mut salt = [0u8; SALT_LEN];
                OsRng.fill_bytes(&mut salt);
                let master = derive_master(passphrase, &salt, params_if_new)?;
                let source = KeySource::Passphrase {
                    params: params_if_new,
                    salt,
                };
                Self::create(inner, &master, source)
            }
        }
    }

    /// Opens `inner` with raw key material supplied by the application.
    pub fn open_with_key(inner: S, master: &MasterKey) -> StoreResult<Self> {
        match read_header(&inner)? {
            Some(header) => {
                if header.source != KeySource::Raw {
                    return Err(StoreError::WrongKey);
                }
                Self::with_master(inner, master.as_bytes(), &header)
            }
            None => Self::create(inner, master.as_bytes(), KeySource::Raw),
        }
    }

    fn create(inner: S, master: &[u8; 32], source: KeySource) -> StoreResult<Self> {
        let keys = DerivedKeys::from_master(master);
        let header = Header {
            source,
            key_check: keys.key_check,
        };
        let mut batch = WriteBatch::new();
        batch.put(HEADER_NAMESPACE, header_key(), header.encode());
        inner.apply(batch)?;
        Ok(Self::from_keys(inner, keys))
    }

    fn with_master(inner: S, master: &[u8; 32], header: &Header) -> StoreResult<Self> {
        let keys = DerivedKeys::from_master(master);
        if !bool::from(keys.key_check.ct_eq(&header.key_check)) {
            return Err(StoreError::WrongKey);
        }
        Ok(Self::from_keys(inner, keys))
    }

    fn from_keys(inner: S, keys: DerivedKeys) -> Self {
        let cipher = XChaCha20Poly1305::new(&keys.value_key.into());
        Self {
            inner,
            keys,
            cipher,
        }
    }

    /// The wrapped store (it only ever sees blinded keys and sealed values).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn blind(&self, namespace: &str, key: &Key) -> Key {
        let mut chain = *blake3::Hasher::new_keyed(&self.keys.blind_key)
            .update(&(namespace.len() as u64).to_le_bytes())
            .update(namespace.as_bytes())
            .finalize()
            .as_bytes();
        let mut blinded = Key::empty();
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

    fn seal(
        &self,
        namespace: &str,
        stored_key: &Key,
        key: &Key,
        value: &[u8],
    ) -> StoreResult<Vec<u8>> {
        let key_len = u32::try_from(key.as_bytes().len()).map_err(|_| StoreError::InvalidKey {
            reason: "longer than MAX_KEY_LEN",
        })?;
        let mut plaintext =
            Zeroizing::new(Vec::with_capacity(4 + key.as_bytes().len() + value.len()));
        plaintext.extend_from_slice(&key_len.to_be_bytes());
        plaintext.extend_from_slice(key.as_bytes());
        plaintext.extend_from_slice(value);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = aad(namespace, stored_key);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad: &aad,
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

    /// Decrypts a stored value, returning the plain key and value.
    fn open(
        &self,
        namespace: &str,
        stored_key: &Key,
        sealed: &[u8],
    ) -> StoreResult<(Key, Vec<u8>)> {
        let corrupted = |reason| StoreError::corrupted(namespace, reason);
        let mut reader = ByteReader(sealed);
        match reader.u8() {
            Some(VALUE_VERSION) => {}
            Some(_) => return Err(corrupted("unknown sealed value version")),
            None => return Err(corrupted("empty sealed value")),
        }
        let nonce = reader
            .array::<NONCE_LEN>()
            .ok_or_else(|| corrupted("sealed value truncated"))?;
        let aad = aad(namespace, stored_key);
        let plaintext = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: reader.0,
                        aad: &aad,
                    },
                )
                .map_err(|_| corrupted("authentication failed"))?,
        );
        let mut reader = ByteReader(&plaintext);
        let key_len = reader
            .u32()
            .ok_or_else(|| corrupted("sealed key length missing"))?;
        let key_bytes = usize::try_from(key_len)
            .ok()
            .and_then(|len| reader.take(len))
            .ok_or_else(|| corrupted("sealed key truncated"))?;
        let key = Key::from_encoded(key_bytes.to_vec())
            .map_err(|_| corrupted("sealed key is not a valid key"))?;
        Ok((key, reader.0.to_vec()))
    }
}

fn check_user_namespace(namespace: &str) -> StoreResult<()> {
    if namespace == HEADER_NAMESPACE {
        return Err(StoreError::InvalidArgument {
            reason: "namespace `sealed_store_header` is reserved for the sealed store's header",
        });
    }
    Ok(())
}

fn header_key() -> Key {
    Key::from_segment("header")
}

fn aad(namespace: &str, stored_key: &Key) -> Vec<u8> {
    let mut aad =
        Vec::with_capacity(AAD_LABEL.len() + 1 + namespace.len() + stored_key.as_bytes().len());
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(&(namespace.len() as u64).to_le_bytes());
    aad.extend_from_slice(namespace.as_bytes());
    aad.extend_from_slice(stored_key.as_bytes());
    aad
}

fn read_header<S: KeyValueStore>(inner: &S) -> StoreResult<Option<Header>> {
    inner
        .get(HEADER_NAMESPACE, &header_key())?
        .map(|bytes| Header::decode(&bytes))
        .transpose()
}

fn derive_master(
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

impl<S: KeyValueStore> KeyValueStore for SealedStore<S> {
    fn get(&self, namespace: &str, key: &Key) -> StoreResult<Option<Vec<u8>>> {
        check_user_namespace(namespace)?;
        let stored_key = self.blind(namespace, key);
        let Some(sealed) = self.inner.get(namespace, &stored_key)? else {
            return Ok(None);
        };
        let (plain_key, value) = self.open(namespace, &stored_key, &sealed)?;
        if plain_key != *key {
            return Err(StoreError::corrupted(
                namespace,
                "value belongs to another key",
            ));
        }
        Ok(Some(value))
    }

    fn scan_prefix(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<(Key, Vec<u8>)>> {
        check_user_namespace(namespace)?;
        let stored_prefix = self.blind(namespace, prefix);
        let mut out = Vec::new();
        for (stored_key, sealed) in self.inner.scan_prefix(namespace, &stored_prefix)? {
            let (key, value) = self.open(namespace, &stored_key, &sealed)?;
            if !key.starts_with(prefix) {
                return Err(StoreError::corrupted(
                    namespace,
                    "value belongs to another key",
                ));
            }
            out.push((key, value));
        }
        Ok(out)
    }

    fn apply(&self, batch: WriteBatch) -> StoreResult<()> {
        let mut sealed = WriteBatch::new();
        for op in batch.ops() {
            check_user_namespace(op.namespace())?;
            match op {
                WriteOp::Put {
                    namespace,
                    key,
                    value,
                } => {
                    let stored_key = self.blind(namespace, key);
                    let value = self.seal(namespace, &stored_key, key, value)?;
                    sealed.put(namespace, stored_key, value);
                }
                WriteOp::Delete { namespace, key } => {
                    sealed.delete(namespace, self.blind(namespace, key));
                }
            }
        }
        self.inner.apply(sealed)
    }
}
