//! The storage foundation of SpacePanda core: a durable, transactional, encrypted-at-rest
//! key-value store, and time as an input.
//!
//! # What it does
//!
//! Every MLS operation SpacePanda performs becomes exactly one atomic, durable write, and every
//! secret is encrypted on disk. This crate provides the pieces that make that possible:
//!
//! - [`KeyValueStore`]: an object-safe, namespaced store whose [`WriteBatch`]es are atomic and
//!   durable once [`apply`](KeyValueStore::apply) returns;
//! - [`RedbStore`] (the durable default, one redb file per device) and [`MemoryStore`] (tests,
//!   simulations, benchmarks);
//! - [`FailingStore`]: any store with faults injected on purpose (the n-th `apply`, `get` or
//!   `scan_prefix` fails), so the layers above can prove that a failed operation writes
//!   nothing;
//! - [`Transaction`]: a read-your-writes overlay committed as one batch; dropping it rolls back;
//!   [`Savepoint`]s let one step of an operation fail without failing the operation;
//! - [`SealedStore`]: XChaCha20-Poly1305 values, BLAKE3-blinded keys and namespaces, and a
//!   commitment over the whole set of entries, over any store, with the master key from a
//!   passphrase (Argon2id) or from 32 raw bytes;
//! - [`Key`]: segmented keys, so "everything of one group" is a prefix even when keys are
//!   blinded;
//! - [`Clock`], [`SystemClock`], [`ManualClock`]: the only way code above reads the time.
//!
//! # What it does not do
//!
//! No network I/O, no threads, no MLS. It does not know what the bytes it stores mean; the
//! layers above (`core_identity`, `core_mls`) own their namespaces and encodings.
//!
//! # Design
//!
//! Backends implement three calls — `get`, `scan_prefix`, `apply` — and nothing else, so a new
//! backend is small and the conformance suite (`tests/conformance.rs`) checks every one of them
//! against the same contract. Atomicity lives in the backend (`apply`), buffering lives in
//! [`Transaction`], and encryption is a wrapper, so `SealedStore<RedbStore>`,
//! `SealedStore<MemoryStore>` and the bare stores behave identically to the layers above.
//!
//! # Storage format
//!
//! [`RedbStore`]: one redb table `spacepanda_kv`, key `len(ns) ‖ ns ‖ encoded key`.
//! [`SealedStore`] (format version 2): every entry in one inner namespace
//! [`SEALED_NAMESPACE`], under a stored key of the blinded namespace followed by the blinded
//! segments; every value `0x02 ‖ nonce ‖ XChaCha20-Poly1305(counter ‖ key ‖ value)`; a clear
//! header (version, Argon2id parameters bounded by [`KdfParams::MAX_ACCEPTED`], key check) and a
//! sealed commitment record (batch counter and a keyed multiset hash of every entry) in
//! [`HEADER_NAMESPACE`]. Files and sealed stores are created and opened by separate calls, so
//! a missing, emptied or stripped file is an error and never a new device. The byte-level
//! format and its invariants are in `docs/STORAGE.md`; the attacks they answer in
//! `docs/THREAT_MODEL.md`.
//!
//! # Getting started
//!
//! ```
//! use std::sync::Arc;
//! use spacepanda_core::{Key, KeyValueStore, MasterKey, RedbStore, SealedStore, SharedStore, Transaction};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("device.redb");
//! let key = MasterKey::generate(); // keep it in the OS keychain
//! // First run: create. Every later start: open (a missing or damaged file is an error).
//! let store: SharedStore = Arc::new(SealedStore::create_with_key(RedbStore::create(&path)?, &key)?);
//!
//! let mut txn = Transaction::begin(&store);
//! txn.put("contacts", Key::from_segments(["bob", "name"]), b"Bob".to_vec())?;
//! txn.put("contacts", Key::from_segments(["bob", "device"]), b"phone".to_vec())?;
//! txn.commit()?; // both writes, atomically, durably
//!
//! let bob = store.scan_prefix("contacts", &Key::from_segment("bob"))?;
//! assert_eq!(bob.len(), 2);
//! drop(store);
//!
//! let store = SealedStore::open_with_key(RedbStore::open(&path)?, &key)?;
//! assert_eq!(store.get("contacts", &Key::from_segments(["bob", "name"]))?, Some(b"Bob".to_vec()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clock;
mod error;
mod failing_store;
mod key;
mod key_value_store;
mod memory_store;
mod redb_store;
mod sealed_store;
mod transaction;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{BackendError, StoreError, StoreResult};
pub use failing_store::{CallCounts, FailPoint, FailingStore, InjectedFault};
pub use key::{Key, MAX_KEY_LEN, Segments};
pub use key_value_store::{KeyValueStore, MAX_NAMESPACE_LEN, SharedStore, WriteBatch, WriteOp};
pub use memory_store::MemoryStore;
pub use redb_store::RedbStore;
pub use sealed_store::{HEADER_NAMESPACE, KdfParams, MasterKey, SEALED_NAMESPACE, SealedStore};
pub use transaction::{PriorValue, Savepoint, Transaction};
