//! Past epochs' member lists, stored once per epoch instead of once per message.
//!
//! Why: OpenMLS keeps, in one record (its `MessageSecretsStore`), the message secrets of the
//! current epoch and of up to `max_past_epochs` past ones, each past one with its whole member
//! list (credentials and keys of every leaf), so that it can attribute late messages. It
//! rewrites that record on every application message sent or received and twice per commit. At
//! 1000 members that is about 1.4 MB per message, nearly all of it member lists that never
//! change once their epoch is over (docs/BENCHMARKS.md; OpenMLS issue 2080).
//!
//! What: the record is written *split*. Every past epoch's `leaves` goes to its own record in
//! [`MEMBERS_NAMESPACE`], keyed by the group and a hash of that epoch's serialized
//! `GroupContext` — which names the list uniquely, across forks too, because the context holds
//! the tree hash. The message secrets record keeps the rest (the *skeleton*) with a one-byte
//! placeholder where each list was, and a header of references. Reading splices the lists back
//! and decodes as before. A list is written once, in the transaction that first needs it, so
//! crash consistency is that of every other write.
//!
//! How the lists are found: serde gives no access to OpenMLS's private fields, so the encoder
//! ([`byte_strings`](super::byte_strings)) recognises the shape while it serialises:
//! a struct `EpochTree` with fields `epoch`, `message_secrets` (a struct `MessageSecrets` with a
//! field `serialized_context`) and then `leaves`, in that order (OpenMLS 0.9,
//! `group/mls_group/past_secrets.rs`). Anything else — another OpenMLS layout, a field missing
//! or out of order — is written in full, which reads back the same way: the split is an
//! optimisation that can never lose data. `openmls_layout_is_split` (in the tests) pins the
//! expectation so that an OpenMLS upgrade that changes the layout is noticed.
//!
//! Collection: each group has an index (`[group id]` in [`INDEX_NAMESPACE`]) of its lists and
//! their epochs. When a new list is written, lists older than `retention` epochs below the
//! newest are deleted (`retention` covers the fork window's snapshots and dormant branches,
//! whose records still reference their epochs' lists, plus `max_past_epochs`). A group this
//! device no longer holds and no snapshot can restore has its lists dropped by
//! [`forget_group`] (called when snapshots expire).
//!
//! Record layout (docs/STORAGE.md): `0x02 ‖ count u32 BE ‖ count × (offset u64 BE ‖ hash 32) ‖
//! skeleton`. A record whose first byte is a CBOR map header (`0xa0`–`0xbf`) is the full
//! encoding of storage format 1, and is read as it is.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use spacepanda_core::{Key, Transaction};
use zeroize::Zeroizing;

use super::codec;
use super::split_layout::{Split, SplitList};
use crate::error::MlsError;

/// Member lists: `[group id, hash]` → the CBOR encoding of one past epoch's `Vec<Member>`.
pub(crate) const MEMBERS_NAMESPACE: &str = "mls_epoch_members";
/// Per-group index of the lists: `[group id]` → CBOR list of `(epoch, hash)`.
pub(crate) const INDEX_NAMESPACE: &str = "mls_epoch_members_index";

/// First byte of a split record. Not a CBOR map header, so it cannot be confused with a record
/// of format 1.
const SPLIT_TAG: u8 = 0x02;
/// The placeholder CBOR value (`null`) written where a list was.
const PLACEHOLDER: u8 = 0xf6;
const HASH_LEN: usize = 32;
const REFERENCE_LEN: usize = 8 + HASH_LEN;

/// A message secrets record, encoded split, and the lists it references that were not known.
pub(crate) struct SplitRecord {
    /// What goes under the message secrets key.
    pub(crate) record: Zeroizing<Vec<u8>>,
    /// Every list the record references, by hash, with its epoch.
    pub(crate) references: Vec<([u8; HASH_LEN], u64)>,
    /// The lists among them that were not `known`: `(hash, epoch, encoding)`.
    pub(crate) new_lists: Vec<([u8; HASH_LEN], u64, Vec<u8>)>,
}

/// Encodes `value` (OpenMLS's message secrets store) with its past member lists split out;
/// lists whose hash `known` holds are referenced without being encoded.
pub(crate) fn encode_split<T: Serialize + ?Sized>(
    value: &T,
    known: &dyn Fn(&[u8; HASH_LEN]) -> bool,
) -> Result<SplitRecord, MlsError> {
    let written = Cell::new(0usize);
    let split = Split {
        written: &written,
        known,
        lists: RefCell::new(Vec::new()),
    };
    let mut skeleton = Zeroizing::new(Vec::new());
    ciborium::into_writer(
        &split.wrap(value),
        Counting {
            out: &mut skeleton,
            written: &written,
        },
    )
    .map_err(|_| MlsError::Internal {
        what: "an OpenMLS value does not serialise to CBOR",
    })?;
    let lists = split.lists.into_inner();
    let count = u32::try_from(lists.len()).map_err(|_| MlsError::Internal {
        what: "more past epochs than a record can reference",
    })?;
    let mut record = Zeroizing::new(Vec::with_capacity(
        1 + 4 + lists.len() * REFERENCE_LEN + skeleton.len(),
    ));
    record.push(SPLIT_TAG);
    record.extend_from_slice(&count.to_be_bytes());
    let mut references = Vec::with_capacity(lists.len());
    let mut new_lists = Vec::new();
    for list in lists {
        let SplitList {
            offset,
            hash,
            epoch,
            encoding,
        } = list;
        record.extend_from_slice(&(offset as u64).to_be_bytes());
        record.extend_from_slice(&hash);
        references.push((hash, epoch));
        if let Some(encoding) = encoding {
            new_lists.push((hash, epoch, encoding));
        }
    }
    record.extend_from_slice(&skeleton);
    Ok(SplitRecord {
        record,
        references,
        new_lists,
    })
}

/// Reads a referenced member list by hash (`None`: missing).
pub(crate) type ListReader<'a> =
    dyn FnMut(&[u8; HASH_LEN]) -> Result<Option<Zeroizing<Vec<u8>>>, MlsError> + 'a;

/// Decodes a stored message secrets record of either format; `list` reads a referenced member
/// list (`None`: missing).
pub(crate) fn decode_split<T: DeserializeOwned>(
    namespace: &'static str,
    bytes: &[u8],
    list: &mut ListReader<'_>,
) -> Result<T, MlsError> {
    let corrupted = |reason| MlsError::corrupted(namespace, reason);
    match bytes.first() {
        Some(0xa0..=0xbf) => return codec::decode(namespace, bytes),
        Some(&SPLIT_TAG) => {}
        _ => return Err(corrupted("a message secrets record has an unknown format")),
    }
    let count = bytes
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or(corrupted("a message secrets record is cut short"))?;
    let header_end = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(REFERENCE_LEN))
        .and_then(|n| n.checked_add(5))
        .filter(|end| *end <= bytes.len())
        .ok_or(corrupted(
            "a message secrets record references more lists than it holds",
        ))?;
    let (header, skeleton) = bytes.split_at(header_end);
    let mut whole = Zeroizing::new(Vec::new());
    let mut from = 0usize;
    for reference in header
        .get(5..)
        .unwrap_or_default()
        .chunks_exact(REFERENCE_LEN)
    {
        let (offset, hash) = reference.split_at(8);
        let offset = <[u8; 8]>::try_from(offset)
            .ok()
            .map(u64::from_be_bytes)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(corrupted("a member list reference is malformed"))?;
        let hash = <[u8; HASH_LEN]>::try_from(hash)
            .map_err(|_| corrupted("a member list reference is malformed"))?;
        if offset < from || skeleton.get(offset) != Some(&PLACEHOLDER) {
            return Err(corrupted(
                "a member list reference does not point at its placeholder",
            ));
        }
        let members = list(&hash)?.ok_or(corrupted(
            "a past epoch's member list is missing; restore the device from a backup or \
             rejoin the group",
        ))?;
        if whole.is_empty() {
            // Sized by what was read, never by the stored count (a damaged header must not
            // turn into a huge allocation).
            whole.reserve(skeleton.len().saturating_add(members.len()));
        }
        whole.extend_from_slice(skeleton.get(from..offset).unwrap_or_default());
        whole.extend_from_slice(&members);
        from = offset + 1;
    }
    if from == 0 {
        return codec::decode(namespace, skeleton);
    }
    whole.extend_from_slice(skeleton.get(from..).unwrap_or_default());
    codec::decode(namespace, &whole)
}

/// A writer that counts what it was given, so the encoder knows where a placeholder lands.
struct Counting<'a> {
    out: &'a mut Vec<u8>,
    written: &'a Cell<usize>,
}

impl std::io::Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        self.written.set(self.written.get() + buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The lists a group has stored, by hash, with their epochs.
pub(crate) type Index = BTreeMap<[u8; HASH_LEN], u64>;

/// The key of a group's index: `[group id]`.
pub(crate) fn index_key(group: &[u8]) -> Key {
    Key::from_segment(group)
}

/// The key of one list: `[group id, hash]`.
pub(crate) fn list_key(group: &[u8], hash: &[u8; HASH_LEN]) -> Key {
    Key::from_segment(group).with(hash)
}

/// Decodes a group's index.
pub(crate) fn decode_index(bytes: &[u8]) -> Result<Index, MlsError> {
    let entries: Vec<(u64, Vec<u8>)> = codec::decode(INDEX_NAMESPACE, bytes)?;
    entries
        .into_iter()
        .map(|(epoch, hash)| {
            <[u8; HASH_LEN]>::try_from(hash.as_slice())
                .map(|hash| (hash, epoch))
                .map_err(|_| {
                    MlsError::corrupted(INDEX_NAMESPACE, "a member list hash is not 32 bytes")
                })
        })
        .collect()
}

/// Stores the split record's new lists and collects the lists `retention` epochs below the
/// newest, keeping every list `references` names; writes the updated index.
pub(crate) fn store_lists(
    txn: &mut Transaction,
    group: &[u8],
    mut index: Index,
    split: &SplitRecord,
    retention: u64,
) -> Result<(), MlsError> {
    if split.new_lists.is_empty() {
        return Ok(());
    }
    for (hash, epoch, encoding) in &split.new_lists {
        txn.put(MEMBERS_NAMESPACE, list_key(group, hash), encoding.clone())?;
        index.insert(*hash, *epoch);
    }
    let newest = index.values().copied().max().unwrap_or(0);
    let referenced = |hash: &[u8; HASH_LEN]| split.references.iter().any(|(h, _)| h == hash);
    let expired: Vec<[u8; HASH_LEN]> = index
        .iter()
        .filter(|(hash, epoch)| epoch.saturating_add(retention) < newest && !referenced(hash))
        .map(|(hash, _)| *hash)
        .collect();
    for hash in expired {
        index.remove(&hash);
        txn.delete(MEMBERS_NAMESPACE, list_key(group, &hash))?;
    }
    let entries: Vec<(u64, &[u8])> = index
        .iter()
        .map(|(hash, epoch)| (*epoch, hash.as_slice()))
        .collect();
    txn.put(INDEX_NAMESPACE, index_key(group), codec::encode(&entries)?)?;
    Ok(())
}

/// The raw ids of every group that has member lists stored.
pub(crate) fn groups(txn: &Transaction) -> Result<Vec<Vec<u8>>, MlsError> {
    let mut groups = Vec::new();
    for (key, _) in txn.scan_prefix(INDEX_NAMESPACE, &Key::empty())? {
        if let Some(group) = key.segments().next() {
            groups.push(group.to_vec());
        }
    }
    Ok(groups)
}

/// Drops every member list of a group (no state or snapshot of it remains to reference them).
pub(crate) fn forget_group(txn: &mut Transaction, group: &[u8]) -> Result<(), MlsError> {
    txn.delete_prefix(MEMBERS_NAMESPACE, &Key::from_segment(group))?;
    txn.delete(INDEX_NAMESPACE, index_key(group))?;
    Ok(())
}
