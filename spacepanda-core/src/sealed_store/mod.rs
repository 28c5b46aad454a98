//! Encryption at rest: a [`KeyValueStore`] wrapper that seals values, blinds keys and
//! namespaces, and commits to the whole set of entries.
//!
//! Format (version 2; `docs/STORAGE.md` has the byte tables). In the wrapped store:
//! - namespace [`SEALED_NAMESPACE`] holds every entry of every namespace. Stored key: the first
//!   16 bytes of `h₀ = BLAKE3-keyed(blind_key, u64le(len ns) ‖ ns)`, then for each segment `sᵢ`
//!   of the plain key the first 16 bytes of `hᵢ = BLAKE3-keyed(blind_key, hᵢ₋₁ ‖ u64le(len sᵢ)
//!   ‖ sᵢ)`. Namespace names never reach the file, and a namespace or a whole-segment prefix
//!   is still one range scan of the wrapped store.
//! - stored value: `0x02 ‖ nonce(24) ‖ XChaCha20-Poly1305(value_key, nonce, aad,
//!   u64be(counter) ‖ u32be(len key) ‖ plain key ‖ value)` with `aad = "spacepanda sealed v2"
//!   ‖ u64le(len ns) ‖ ns ‖ stored key`: a value copied to another key or namespace fails
//!   authentication; `counter` is the number of the batch that wrote it.
//! - namespace [`HEADER_NAMESPACE`], key `["header"]` (clear): magic, format version, how the
//!   master key is made (Argon2id with salt and parameters, or raw) and a key-check value, so a
//!   wrong key is [`StoreError::WrongKey`] at open.
//! - namespace [`HEADER_NAMESPACE`], key `["commitment"]`: `0x02 ‖ nonce ‖
//!   XChaCha20-Poly1305(value_key, nonce, "spacepanda sealed v2 commitment", u64be(counter) ‖
//!   digest(32))`, where `counter` counts committed batches and `digest` is the multiset hash of
//!   every entry of [`SEALED_NAMESPACE`] (see `commitment.rs`). Every `apply` rewrites it in
//!   the same inner batch as the entries; `open` recomputes the digest from a scan, so a deleted,
//!   added or rolled-back entry is [`StoreError::Corrupted`].
//!
//! `value_key`, `blind_key`, `mac_key` and the key-check value are derived from the master key
//! with BLAKE3's `derive_key` under distinct contexts.

mod commitment;
mod header;
mod keys;
mod sealer;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use chacha20poly1305::aead::OsRng;
use rand::RngCore;
use subtle::ConstantTimeEq;

use self::commitment::CommitState;
use self::header::{Header, KeySource, SALT_LEN};
use self::keys::{DerivedKeys, derive_master};
use self::sealer::{Opened, Sealer};
use crate::key_value_store::check_namespace;
use crate::{Key, KeyValueStore, StoreError, StoreResult, WriteBatch, WriteOp};

pub use self::header::KdfParams;
pub use self::keys::MasterKey;

/// Namespace of the header and the commitment record in the wrapped store.
pub const HEADER_NAMESPACE: &str = "sealed_store_header";

/// The one namespace of the wrapped store that holds the entries of every sealed namespace.
pub const SEALED_NAMESPACE: &str = "sealed";

const FORMAT_VERSION: u32 = 2;

/// Encrypts every value and blinds every key and namespace of the store it wraps, and detects
/// entries deleted, added or rolled back behind its back. See the [module docs](self) for the
/// format.
///
/// Creating and opening are separate: `create_*` writes a header into an *empty* store and
/// refuses one that holds anything ([`StoreError::NotEmpty`]); `open_*` requires the header
/// ([`StoreError::NotSealed`]) and the key it names (else [`StoreError::WrongKey`]), then checks
/// every entry against the commitment record. A value that was tampered with, truncated, moved,
/// deleted or replaced by an older one reads as [`StoreError::Corrupted`].
///
/// ```
/// use std::sync::Arc;
/// use spacepanda_core::{KdfParams, Key, KeyValueStore, MemoryStore, SealedStore, StoreError};
///
/// let inner = Arc::new(MemoryStore::new());
/// let params = KdfParams::INSECURE_FOR_TESTS; // use KdfParams::default() in production
/// let sealed = SealedStore::create_with_passphrase(inner.clone(), b"correct horse", params)?;
/// let mut batch = spacepanda_core::WriteBatch::new();
/// batch.put("notes", Key::from_segment("k"), b"secret".to_vec());
/// sealed.apply(batch)?;
/// assert_eq!(sealed.get("notes", &Key::from_segment("k"))?, Some(b"secret".to_vec()));
/// drop(sealed);
///
/// let wrong = SealedStore::open_with_passphrase(inner.clone(), b"wrong");
/// assert!(matches!(wrong, Err(StoreError::WrongKey)));
/// let again = SealedStore::open_with_passphrase(inner, b"correct horse")?;
/// assert_eq!(again.get("notes", &Key::from_segment("k"))?, Some(b"secret".to_vec()));
/// # Ok::<(), StoreError>(())
/// ```
pub struct SealedStore<S> {
    inner: S,
    sealer: Sealer,
    /// Last committed counter and digest. Held across each `apply`'s read-modify-write, so
    /// batches update the commitment one after another.
    state: Mutex<CommitState>,
    /// The highest counter any batch may have written. Raised before a batch reaches the
    /// wrapped store, so a concurrent read never sees a value newer than it.
    counter_bound: AtomicU64,
}

impl<S> fmt::Debug for SealedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedStore").finish_non_exhaustive()
    }
}

impl<S: KeyValueStore> SealedStore<S> {
    /// Creates a new sealed store in the empty store `inner`, with a master key derived from
    /// `passphrase` by Argon2id with `params` (at most [`KdfParams::MAX_ACCEPTED`]).
    pub fn create_with_passphrase(
        inner: S,
        passphrase: &[u8],
        params: KdfParams,
    ) -> StoreResult<Self> {
        if !params.within_bounds() {
            return Err(StoreError::InvalidArgument {
                reason: "Argon2id parameters out of bounds (memory 8 KiB per lane..64 MiB, 1..4 passes, 1..4 lanes)",
            });
        }
        ensure_empty(&inner)?;
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let master = derive_master(passphrase, &salt, params)?;
        Self::create(inner, &master, KeySource::Passphrase { params, salt })
    }

    /// Creates a new sealed store in the empty store `inner`, with raw key material supplied by
    /// the application.
    pub fn create_with_key(inner: S, master: &MasterKey) -> StoreResult<Self> {
        ensure_empty(&inner)?;
        Self::create(inner, master.as_bytes(), KeySource::Raw)
    }

    /// Opens the sealed store in `inner` with its passphrase; the Argon2id parameters come from
    /// the header (and are refused as [`StoreError::Corrupted`] above
    /// [`KdfParams::MAX_ACCEPTED`], before anything is derived).
    pub fn open_with_passphrase(inner: S, passphrase: &[u8]) -> StoreResult<Self> {
        let header = read_header(&inner)?;
        let KeySource::Passphrase { params, salt } = header.source else {
            return Err(StoreError::WrongKey);
        };
        let master = derive_master(passphrase, &salt, params)?;
        Self::open(inner, &master, &header)
    }

    /// Opens the sealed store in `inner` with the raw key it was created with.
    pub fn open_with_key(inner: S, master: &MasterKey) -> StoreResult<Self> {
        let header = read_header(&inner)?;
        if header.source != KeySource::Raw {
            return Err(StoreError::WrongKey);
        }
        Self::open(inner, master.as_bytes(), &header)
    }

    fn create(inner: S, master: &[u8; 32], source: KeySource) -> StoreResult<Self> {
        let sealer = Sealer::new(DerivedKeys::from_master(master));
        let header = Header {
            source,
            key_check: *sealer.key_check(),
        };
        let state = CommitState::default();
        let mut batch = WriteBatch::new();
        batch
            .put(HEADER_NAMESPACE, header_key(), header.encode())
            .put(
                HEADER_NAMESPACE,
                commitment_key(),
                sealer.seal_commitment(&state)?,
            );
        inner.apply(batch)?;
        Ok(Self::assemble(inner, sealer, state))
    }

    fn open(inner: S, master: &[u8; 32], header: &Header) -> StoreResult<Self> {
        let sealer = Sealer::new(DerivedKeys::from_master(master));
        if !bool::from(sealer.key_check().ct_eq(&header.key_check)) {
            return Err(StoreError::WrongKey);
        }
        let corrupted = |reason| StoreError::corrupted(HEADER_NAMESPACE, reason);
        let record = inner
            .get(HEADER_NAMESPACE, &commitment_key())?
            .ok_or_else(|| corrupted("the commitment record is missing"))?;
        let state = sealer.open_commitment(&record).map_err(corrupted)?;
        // Authentic entries alone prove nothing about the set; the digest over all of them does.
        let mut digest = commitment::SetDigest::default();
        for (stored_key, stored_value) in inner.scan_prefix(SEALED_NAMESPACE, &Key::empty())? {
            digest.add(&sealer.term(&stored_key, &stored_value));
        }
        if digest != state.digest {
            return Err(StoreError::corrupted(
                SEALED_NAMESPACE,
                "the entries do not match the commitment record: an entry was deleted, added or replaced by an older one",
            ));
        }
        Ok(Self::assemble(inner, sealer, state))
    }

    fn assemble(inner: S, sealer: Sealer, state: CommitState) -> Self {
        Self {
            inner,
            sealer,
            counter_bound: AtomicU64::new(state.counter),
            state: Mutex::new(state),
        }
    }

    /// The wrapped store (it only ever sees blinded keys and sealed values).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Opens a stored value read for `namespace`, checking that it belongs to a key under
    /// `prefix` and was written by a batch this store has issued.
    fn open_entry(
        &self,
        namespace: &str,
        stored_key: &Key,
        sealed: &[u8],
        prefix: &Key,
    ) -> StoreResult<Opened> {
        let opened = self.sealer.open(namespace, stored_key, sealed)?;
        if !opened.key.starts_with(prefix) {
            return Err(StoreError::corrupted(
                namespace,
                "value belongs to another key",
            ));
        }
        if opened.counter > self.counter_bound.load(Ordering::Acquire) {
            return Err(StoreError::corrupted(
                namespace,
                "value is newer than the store's last commit",
            ));
        }
        Ok(opened)
    }
}

/// A sealed store is only ever created over an empty one: anything else is existing data that
/// a new header would silently adopt.
fn ensure_empty<S: KeyValueStore>(inner: &S) -> StoreResult<()> {
    if inner.is_empty()? {
        Ok(())
    } else {
        Err(StoreError::NotEmpty)
    }
}

fn header_key() -> Key {
    Key::from_segment("header")
}

fn commitment_key() -> Key {
    Key::from_segment("commitment")
}

fn read_header<S: KeyValueStore>(inner: &S) -> StoreResult<Header> {
    let bytes = inner
        .get(HEADER_NAMESPACE, &header_key())?
        .ok_or(StoreError::NotSealed)?;
    Header::decode(&bytes)
}

pub(crate) struct ByteReader<'a>(pub(crate) &'a [u8]);

impl<'a> ByteReader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array::<4>().map(u32::from_be_bytes)
    }
}

impl<S: KeyValueStore> KeyValueStore for SealedStore<S> {
    fn get(&self, namespace: &str, key: &Key) -> StoreResult<Option<Vec<u8>>> {
        check_namespace(namespace)?;
        let stored_key = self.sealer.blind(namespace, key);
        let Some(sealed) = self.inner.get(SEALED_NAMESPACE, &stored_key)? else {
            return Ok(None);
        };
        let opened = self.open_entry(namespace, &stored_key, &sealed, key)?;
        if opened.key != *key {
            return Err(StoreError::corrupted(
                namespace,
                "value belongs to another key",
            ));
        }
        Ok(Some(opened.value))
    }

    fn scan_prefix(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<(Key, Vec<u8>)>> {
        check_namespace(namespace)?;
        let stored_prefix = self.sealer.blind(namespace, prefix);
        self.inner
            .scan_prefix(SEALED_NAMESPACE, &stored_prefix)?
            .into_iter()
            .map(|(stored_key, sealed)| {
                let opened = self.open_entry(namespace, &stored_key, &sealed, prefix)?;
                Ok((opened.key, opened.value))
            })
            .collect()
    }

    fn apply(&self, batch: WriteBatch) -> StoreResult<()> {
        for op in batch.ops() {
            check_namespace(op.namespace())?;
        }
        if batch.is_empty() {
            return self.inner.apply(WriteBatch::new());
        }
        // Nothing in the state can be half-updated: it is replaced whole after the inner batch
        // commits, so a panic elsewhere while it was locked left it as it was.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let counter = state
            .counter
            .checked_add(1)
            .ok_or_else(|| StoreError::corrupted(HEADER_NAMESPACE, "commit counter exhausted"))?;
        let mut digest = state.digest;
        // The term of each stored key as this batch leaves it so far; later writes to the same
        // key replace what earlier ones of the batch wrote, not what is on disk.
        let mut written: HashMap<Key, Option<[u8; 32]>> = HashMap::new();
        let stored_keys: Vec<Key> = batch
            .ops()
            .iter()
            .map(|op| self.sealer.blind(op.namespace(), op.key()))
            .collect();
        // What each key holds on disk now, in one read (its term leaves the digest).
        let mut on_disk: HashMap<Key, Option<[u8; 32]>> = HashMap::new();
        for (key, old) in stored_keys
            .iter()
            .zip(self.inner.get_many(SEALED_NAMESPACE, &stored_keys)?)
        {
            on_disk.insert(key.clone(), old.map(|old| self.sealer.term(key, &old)));
        }
        let mut sealed = WriteBatch::new();
        for (op, stored_key) in batch.ops().iter().zip(stored_keys) {
            let old_term = match written.get(&stored_key) {
                Some(term) => *term,
                None => on_disk.get(&stored_key).copied().flatten(),
            };
            if let Some(old_term) = old_term {
                digest.sub(&old_term);
            }
            let new_term = match op {
                WriteOp::Put {
                    namespace,
                    key,
                    value,
                } => {
                    let value = self
                        .sealer
                        .seal(namespace, &stored_key, key, value, counter)?;
                    let term = self.sealer.term(&stored_key, &value);
                    digest.add(&term);
                    sealed.put(SEALED_NAMESPACE, stored_key.clone(), value);
                    Some(term)
                }
                WriteOp::Delete { .. } => {
                    sealed.delete(SEALED_NAMESPACE, stored_key.clone());
                    None
                }
            };
            written.insert(stored_key, new_term);
        }
        let next = CommitState { counter, digest };
        sealed.put(
            HEADER_NAMESPACE,
            commitment_key(),
            self.sealer.seal_commitment(&next)?,
        );
        self.counter_bound.fetch_max(counter, Ordering::AcqRel);
        self.inner.apply(sealed)?;
        *state = next;
        Ok(())
    }

    /// The digest of the empty set is zero, so this needs no scan.
    fn is_empty(&self) -> StoreResult<bool> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .digest
            .is_empty_set())
    }
}
