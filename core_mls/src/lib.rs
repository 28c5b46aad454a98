//! SpacePanda's MLS engine for one device: OpenMLS on durable, transactional, optionally
//! encrypted storage.
//!
//! # What it does
//!
//! - [`storage::KvStorageProvider`] implements OpenMLS's `StorageProvider<1>` (all 53 methods)
//!   over any [`spacepanda_core::KeyValueStore`] — `RedbStore` on disk, `SealedStore` for
//!   encryption at rest, `MemoryStore` in tests — so every byte of MLS state survives restarts.
//! - [`provider::SpacePandaProvider`] is the `OpenMlsProvider` (RustCrypto + that storage) and
//!   runs each OpenMLS operation as one storage transaction
//!   ([`transaction`](provider::SpacePandaProvider::transaction),
//!   [`group_transaction`](provider::SpacePandaProvider::group_transaction)).
//! - [`MlsError`] is the crate's one error type.
//!
//! # What it does not do
//!
//! No network I/O and no threads: inputs are bytes, outputs are bytes and stored state; the
//! network layer drives it. It does not read the clock (OpenMLS itself does, for lifetimes).
//! Identity binding of credentials comes from `core_identity` in a later layer.
//!
//! # Design
//!
//! **Key layout.** Everything OpenMLS stores about one group lives in namespace `mls` under the
//! key prefix `["g", group_id]` (one segment per label after it: `tree`, `context`,
//! `own_leaf_node/seq`, `proposal/seq`, `epoch_key_pairs/epoch/leaf` …), so listing, deleting
//! and snapshotting a group are prefix operations — also under `SealedStore`, which blinds keys
//! segment by segment. State not keyed by a group has its own namespace: `mls_key_package`
//! (by hash reference), `mls_signature_key` and `mls_encryption_key` (by public key), `mls_psk`
//! (by PSK id). `mls_meta` holds the storage format record, written at first use; a store
//! written by a newer format is refused with [`MlsError::UnsupportedStateVersion`]. Values are
//! CBOR (chosen by measurement, see `storage::codec`).
//!
//! **Transaction rule.** Every OpenMLS write goes through the one open
//! [`spacepanda_core::Transaction`]; with none open a write fails with
//! [`MlsError::NoTransaction`]. An operation's writes (OpenMLS's and the caller's own records,
//! via [`KvStorageProvider::with_transaction`]) commit as one atomic, durable batch when it
//! succeeds; on error or panic they are discarded and the `MlsGroup` is reloaded from storage,
//! so memory and disk never disagree — a Welcome that fails validation does not even burn the
//! key package OpenMLS deleted before rejecting it.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use core_mls::{MlsError, SpacePandaProvider};
//! use openmls::prelude::*;
//! use openmls_basic_credential::SignatureKeyPair;
//! use spacepanda_core::{MemoryStore, SharedStore};
//!
//! let store: SharedStore = Arc::new(MemoryStore::new());
//! let provider = SpacePandaProvider::open(store)?;
//! let ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
//! let signer = SignatureKeyPair::new(ciphersuite.signature_algorithm())?;
//! let credential = CredentialWithKey {
//!     credential: BasicCredential::new(b"alice".to_vec()).into(),
//!     signature_key: signer.public().into(),
//! };
//! let config = MlsGroupCreateConfig::builder().ciphersuite(ciphersuite).build();
//!
//! // One operation, one transaction: committed atomically when the closure returns Ok.
//! let group = provider.transaction(|p| {
//!     MlsGroup::new(p, &signer, &config, credential.clone())
//!         .map_err(|e| MlsError::openmls("create a group", e))
//! })?;
//!
//! // Everything is in the store: the group loads back as it was.
//! let loaded = provider.load_group(group.group_id())?.expect("stored");
//! assert_eq!(loaded.epoch_authenticator().as_slice(), group.epoch_authenticator().as_slice());
//! assert_eq!(provider.list_groups()?, vec![group.group_id().clone()]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod error;
pub mod provider;
pub mod storage;

pub use error::MlsError;
pub use provider::SpacePandaProvider;
pub use storage::KvStorageProvider;

mod app_inbox;
mod app_message;
mod client;
mod config;
pub mod envelope;
mod epoch_buffer;
mod events;
mod group_id;
mod group_manager;
pub mod key_package_manager;
mod key_package_validation;
mod member_verification;
mod message_processor;
mod outbox;
mod seen_messages;
mod welcome_handler;

pub use client::{CIPHERSUITE, MlsClient};
pub use config::MlsConfig;
pub use envelope::{Envelope, EnvelopeKind, MessageId};
pub use events::{
    DeliveryId, DeviceAddress, Disposition, Event, Outbound, OutboxId, Output, Recipients,
};
pub use group_id::GroupId;
pub use key_package_manager::{
    KeyPackageState, PoolPolicy, PoolStatus, PublishableKeyPackage, UnknownKeyPackageHint,
};
