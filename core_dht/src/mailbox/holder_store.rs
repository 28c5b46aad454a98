//! What a mailbox holder keeps for devices that are offline, in its own durable store.
//!
//! A holder keeps each deposited envelope until the recipient device fetches and acknowledges
//! it, or its lifetime ends. The content is MLS ciphertext the holder cannot read; what it does
//! see, and keeps, is metadata: the recipient's [`MailboxKey`] (an opaque hash, not a user or
//! device id), the depositing peer, the envelope's size, and its expiry and acknowledgement
//! times. Quotas ([`HolderLimits`]) bound what one sender, one mailbox and the whole store may
//! take, so a flood costs the holder a bounded amount of disk.
//!
//! Storage, namespace [`MAILBOX_NAMESPACE`]:
//! - `["e", mailbox, id]`: one held envelope, CBOR `{bytes, sender, expires_at}` (expiry in Unix
//!   ms). The id is [`EntryId::of`] the bytes, so a retried or replicated deposit lands on the
//!   same key and is stored once.
//! - `["t", mailbox, id]`: a tombstone, the 8-byte big-endian Unix ms until which it is kept,
//!   at most `4 × max_envelopes_per_mailbox` per mailbox. An acknowledged envelope may still
//!   arrive from a sender's retry or a handover; the tombstone keeps it from coming back.
//!
//! Usage counters live in memory, rebuilt by one scan at [`HolderStore::open`], and change only
//! after the write they describe succeeded. Scans of a sealed store are not in key order, so
//! everything is sorted here.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use spacepanda_core::{Key, SharedStore, StoreError, Timestamp, WriteBatch};

use super::quota_usage::Usage;
use super::{DepositOutcome, EntryId, MailboxKey, MailboxRefusal};
use crate::error::DhtResult;

/// The store namespace of held envelopes and tombstones.
pub(crate) const MAILBOX_NAMESPACE: &str = "mailbox";

/// Longest depositor name kept (a libp2p `PeerId` is at most 42 bytes today).
pub(crate) const MAX_SENDER_LEN: usize = 64;

/// How far past `now + ttl` a replica's expiry may be: the sender's clock may run ahead.
const LIFETIME_SLACK_MS: u64 = 5 * 60 * 1000;

/// Tombstones kept per mailbox, per envelope it may hold: room for copies still in flight.
const TOMBSTONES_PER_ENVELOPE: u64 = 4;

const ENTRY: &str = "e";
const TOMBSTONE: &str = "t";

/// What a holder accepts and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HolderLimits {
    /// Longest envelope accepted (a larger one is [`MailboxRefusal::Oversized`]).
    pub(crate) max_envelope_len: usize,
    /// Envelopes held for one mailbox ([`MailboxRefusal::MailboxFull`] beyond).
    pub(crate) max_envelopes_per_mailbox: u64,
    /// Bytes held for one mailbox ([`MailboxRefusal::MailboxFull`] beyond).
    pub(crate) max_bytes_per_mailbox: u64,
    /// Envelopes of one sender held for one mailbox ([`MailboxRefusal::SenderQuota`] beyond),
    /// so one sender cannot fill a mailbox for everyone else.
    pub(crate) max_envelopes_per_sender: u64,
    /// Bytes held in the whole store ([`MailboxRefusal::HolderFull`] beyond).
    pub(crate) max_total_bytes: u64,
    /// How long a deposit is kept, in ms; also how long a tombstone is.
    pub(crate) ttl_ms: u64,
}

impl Default for HolderLimits {
    fn default() -> Self {
        Self {
            max_envelope_len: 256 * 1024,
            max_envelopes_per_mailbox: 1000,
            max_bytes_per_mailbox: 32 * 1024 * 1024,
            max_envelopes_per_sender: 250,
            max_total_bytes: 1024 * 1024 * 1024,
            // As long as a published record lives: a device offline longer must republish.
            ttl_ms: 14 * 24 * 60 * 60 * 1000,
        }
    }
}

/// One envelope a holder keeps.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct HeldEnvelope {
    /// Its name, [`EntryId::of`] `bytes`.
    pub(crate) id: EntryId,
    /// The envelope exactly as deposited.
    pub(crate) bytes: Vec<u8>,
    /// Who deposited it (the bytes of a libp2p `PeerId`), at most [`MAX_SENDER_LEN`] bytes.
    pub(crate) sender: Vec<u8>,
    /// When the holder forgets it.
    pub(crate) expires_at: Timestamp,
}

impl fmt::Debug for HeldEnvelope {
    // Lengths only: a log line has no use for ciphertext.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldEnvelope")
            .field("id", &self.id)
            .field("len", &self.bytes.len())
            .field("sender", &hex::encode(&self.sender))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The value stored under `["e", mailbox, id]`.
#[derive(Serialize, Deserialize)]
struct StoredEntry {
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
    #[serde(with = "serde_bytes")]
    sender: Vec<u8>,
    expires_at: u64,
    /// Arrival order at this holder. Envelopes of one sender must reach the recipient's
    /// engine close to the order they were sent (MLS tolerates only a small reordering
    /// within a sender's ratchet), so pages and hand-overs follow it.
    #[serde(default)]
    arrival: u64,
}

impl StoredEntry {
    fn decode(value: &[u8]) -> Option<Self> {
        ciborium::from_reader(value).ok()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing CBOR into a Vec cannot fail for these plain types.
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    fn len(&self) -> u64 {
        len_u64(self.bytes.len())
    }

    fn live_at(&self, now: Timestamp) -> bool {
        self.expires_at > now.unix_millis()
    }

    fn into_held(self, id: EntryId) -> HeldEnvelope {
        HeldEnvelope {
            id,
            bytes: self.bytes,
            sender: self.sender,
            expires_at: Timestamp::from_unix_millis(self.expires_at),
        }
    }
}

/// The envelopes a holder keeps, with their quotas, over a durable store.
pub(crate) struct HolderStore {
    store: SharedStore,
    limits: HolderLimits,
    // Held across a check and its write, so two deposits cannot both pass the last free slot.
    usage: Mutex<Usage>,
}

impl HolderStore {
    /// Opens over `store` and rebuilds the usage counters from what it holds. Entries that do
    /// not decode are deleted: nothing could deliver them, and counting them would shrink
    /// quotas forever.
    pub(crate) fn open(store: SharedStore, limits: HolderLimits) -> DhtResult<Self> {
        let mut usage = Usage::default();
        let mut unreadable = WriteBatch::new();
        for (key, value) in store.scan_prefix(MAILBOX_NAMESPACE, &Key::from_segment(ENTRY))? {
            match (parse_key(&key), StoredEntry::decode(&value)) {
                (Some((mailbox, _)), Some(entry)) => {
                    usage.arrival = usage.arrival.max(entry.arrival);
                    usage.add(&mailbox, &entry.sender, entry.len())
                }
                _ => {
                    unreadable.delete(MAILBOX_NAMESPACE, key);
                }
            }
        }
        if !unreadable.is_empty() {
            tracing::warn!(count = unreadable.len(), "deleting undecodable envelopes");
            store.apply(unreadable)?;
        }
        Ok(Self {
            store,
            limits,
            usage: Mutex::new(usage),
        })
    }

    /// Keeps `envelope` for `mailbox`, durably before answering [`DepositOutcome::Stored`].
    ///
    /// `expires_at` is `None` for a sender's deposit (kept `ttl` from `now`), or a handed-over
    /// replica's own expiry, kept if after `now` and at most `ttl` (plus five minutes of skew)
    /// away, else [`MailboxRefusal::BadLifetime`]. Held or acknowledged before: `AlreadyHeld`
    /// or `AlreadyDelivered`, taking no quota. Refusals in order: `Oversized` (also when empty),
    /// `HolderFailed` for a sender over [`MAX_SENDER_LEN`], `BadLifetime`, `HolderFull`,
    /// `MailboxFull`, `SenderQuota`; a store failure is `HolderFailed`, with nothing written.
    pub(crate) fn deposit(
        &self,
        mailbox: &MailboxKey,
        envelope: &[u8],
        sender: &[u8],
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<DepositOutcome, MailboxRefusal> {
        let limits = &self.limits;
        let len = len_u64(envelope.len());
        if envelope.is_empty() || envelope.len() > limits.max_envelope_len {
            return Err(MailboxRefusal::Oversized {
                len,
                max: len_u64(limits.max_envelope_len),
            });
        }
        if sender.len() > MAX_SENDER_LEN {
            let reason = format!("the depositor's name is longer than {MAX_SENDER_LEN} bytes");
            return Err(MailboxRefusal::HolderFailed { reason });
        }
        let expires_at =
            lifetime(expires_at, now, limits.ttl_ms).ok_or(MailboxRefusal::BadLifetime)?;
        let id = EntryId::of(envelope);
        let entry_key = entry_key(mailbox, &id);
        let tombstone_key = tombstone_key(mailbox, &id);

        let mut usage = self.lock();
        let mut found = self
            .store
            .get_many(
                MAILBOX_NAMESPACE,
                &[entry_key.clone(), tombstone_key.clone()],
            )
            .map_err(|e| failed("reading the mailbox", &e))?
            .into_iter();
        let (held, tombstone) = (found.next().flatten(), found.next().flatten());

        let mut batch = WriteBatch::new();
        if let Some(tombstone) = tombstone {
            if tombstone_expiry(&tombstone).is_some_and(|until| until > now.unix_millis()) {
                return Ok(DepositOutcome::AlreadyDelivered);
            }
            batch.delete(MAILBOX_NAMESPACE, tombstone_key);
        }
        // An expired copy not swept yet is replaced: the sender means a new delivery, and
        // answering AlreadyHeld would let it drop an envelope nobody will deliver.
        let mut replaced: Option<Vec<u8>> = None;
        if let Some(entry) = held.as_deref().and_then(StoredEntry::decode) {
            if entry.live_at(now) {
                return Ok(DepositOutcome::AlreadyHeld);
            }
            replaced = Some(entry.sender);
        }

        // Quotas as if the replaced copy (same id, so same length) were gone.
        let released = u64::from(replaced.is_some());
        let (envelopes, bytes, of_sender) = usage.of(mailbox, sender);
        let envelopes = envelopes.saturating_sub(released);
        let bytes = bytes.saturating_sub(released * len);
        let total = usage.total_bytes.saturating_sub(released * len);
        let of_sender = of_sender.saturating_sub(u64::from(replaced.as_deref() == Some(sender)));
        if total.saturating_add(len) > limits.max_total_bytes {
            return Err(MailboxRefusal::HolderFull);
        }
        if envelopes >= limits.max_envelopes_per_mailbox
            || bytes.saturating_add(len) > limits.max_bytes_per_mailbox
        {
            return Err(MailboxRefusal::MailboxFull {
                held: envelopes,
                held_bytes: bytes,
                max: limits.max_envelopes_per_mailbox,
                max_bytes: limits.max_bytes_per_mailbox,
            });
        }
        if of_sender >= limits.max_envelopes_per_sender {
            return Err(MailboxRefusal::SenderQuota {
                held: of_sender,
                max: limits.max_envelopes_per_sender,
            });
        }

        let entry = StoredEntry {
            bytes: envelope.to_vec(),
            sender: sender.to_vec(),
            expires_at: expires_at.unix_millis(),
            arrival: usage.arrival.saturating_add(1),
        };
        batch.put(MAILBOX_NAMESPACE, entry_key, entry.encode());
        self.store
            .apply(batch)
            .map_err(|e| failed("writing the envelope", &e))?;
        if let Some(old_sender) = replaced {
            usage.remove(mailbox, &old_sender, len);
        }
        usage.add(mailbox, sender, len);
        usage.arrival = entry.arrival;
        Ok(DepositOutcome::Stored)
    }

    /// The unexpired envelopes of `mailbox` after `after`, in arrival order (from the
    /// start if `after` is no longer held): at most
    /// `max_count` of them (at least one) and, past the first, at most `max_bytes` in all, so a
    /// walk always progresses. The flag says whether unexpired envelopes remain after the page.
    pub(crate) fn page(
        &self,
        mailbox: &MailboxKey,
        after: Option<EntryId>,
        max_count: usize,
        max_bytes: usize,
        now: Timestamp,
    ) -> DhtResult<(Vec<HeldEnvelope>, bool)> {
        let max_count = max_count.max(1);
        let mut page: Vec<HeldEnvelope> = Vec::new();
        let mut size = 0usize;
        let entries = self.read_mailbox(mailbox)?;
        let start = after
            .and_then(|after| entries.iter().position(|(id, _)| *id == after))
            .map_or(0, |position| position + 1);
        let remaining = entries
            .into_iter()
            .skip(start)
            .filter(|(_, entry)| entry.live_at(now));
        for (id, entry) in remaining {
            let fits = page.is_empty()
                || (page.len() < max_count && size.saturating_add(entry.bytes.len()) <= max_bytes);
            if !fits {
                return Ok((page, true));
            }
            size = size.saturating_add(entry.bytes.len());
            page.push(entry.into_held(id));
        }
        Ok((page, false))
    }

    /// Deletes `ids` from `mailbox` and keeps a tombstone for each (held or not: a copy may be
    /// on its way) until `now + ttl`, in one write, dropping those expiring first beyond the
    /// mailbox's bound. Returns how many held envelopes were deleted.
    pub(crate) fn acknowledge(
        &self,
        mailbox: &MailboxKey,
        ids: &[EntryId],
        now: Timestamp,
    ) -> DhtResult<usize> {
        let ids: BTreeSet<EntryId> = ids.iter().copied().collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let until = now.unix_millis().saturating_add(self.limits.ttl_ms);
        let mut usage = self.lock();
        let mut batch = WriteBatch::new();

        let keys: Vec<Key> = ids.iter().map(|id| entry_key(mailbox, id)).collect();
        let held = self.store.get_many(MAILBOX_NAMESPACE, &keys)?;
        // None for an entry that does not decode: never counted, it goes all the same.
        let mut deleted: Vec<Option<(u64, Vec<u8>)>> = Vec::new();
        for (key, value) in keys.into_iter().zip(held) {
            let Some(value) = value else { continue };
            deleted.push(StoredEntry::decode(&value).map(|entry| (entry.len(), entry.sender)));
            batch.delete(MAILBOX_NAMESPACE, key);
        }

        // (until, id, new): sorted, the front is what expires first.
        let mut tombstones: Vec<(u64, EntryId, bool)> = Vec::new();
        let prefix = Key::from_segment(TOMBSTONE).with(mailbox.as_bytes());
        for (key, value) in self.store.scan_prefix(MAILBOX_NAMESPACE, &prefix)? {
            let parsed = parse_key(&key).map(|(_, id)| id);
            match (parsed, tombstone_expiry(&value)) {
                (Some(id), Some(at)) if at > now.unix_millis() && !ids.contains(&id) => {
                    tombstones.push((at, id, false));
                }
                (Some(id), _) if ids.contains(&id) => {} // rewritten below
                _ => {
                    batch.delete(MAILBOX_NAMESPACE, key);
                }
            }
        }
        tombstones.extend(ids.iter().map(|id| (until, *id, true)));
        tombstones.sort_unstable();
        let bound = usize::try_from(
            self.limits
                .max_envelopes_per_mailbox
                .saturating_mul(TOMBSTONES_PER_ENVELOPE),
        )
        .unwrap_or(usize::MAX);
        let excess = tombstones.len().saturating_sub(bound);
        for (index, (at, id, new)) in tombstones.into_iter().enumerate() {
            if index < excess {
                batch.delete(MAILBOX_NAMESPACE, tombstone_key(mailbox, &id));
            } else if new {
                batch.put(
                    MAILBOX_NAMESPACE,
                    tombstone_key(mailbox, &id),
                    at.to_be_bytes().to_vec(),
                );
            }
        }

        self.store.apply(batch)?;
        for (len, sender) in deleted.iter().flatten() {
            usage.remove(mailbox, sender, *len);
        }
        Ok(deleted.len())
    }

    /// Every mailbox with at least one envelope held (expired ones not swept yet included), in
    /// key order.
    pub(crate) fn mailboxes(&self) -> DhtResult<Vec<MailboxKey>> {
        let mut mailboxes: Vec<MailboxKey> = self.lock().mailboxes.keys().copied().collect();
        mailboxes.sort_unstable();
        Ok(mailboxes)
    }

    /// Every unexpired envelope of `mailbox`, in arrival order (what a new holder is handed).
    pub(crate) fn all_in(
        &self,
        mailbox: &MailboxKey,
        now: Timestamp,
    ) -> DhtResult<Vec<HeldEnvelope>> {
        Ok(self
            .read_mailbox(mailbox)?
            .into_iter()
            .filter(|(_, entry)| entry.live_at(now))
            .map(|(id, entry)| entry.into_held(id))
            .collect())
    }

    /// Forgets every envelope of `mailbox`, handed over since this node is no longer its
    /// holder, in one write. Tombstones stay: copies may still circulate if it becomes one
    /// again. Returns how many envelopes were removed.
    pub(crate) fn drop_mailbox(&self, mailbox: &MailboxKey) -> DhtResult<usize> {
        let mut usage = self.lock();
        let mut batch = WriteBatch::new();
        let held = self
            .store
            .scan_prefix(MAILBOX_NAMESPACE, &entry_prefix(mailbox))?;
        for (key, _) in held {
            batch.delete(MAILBOX_NAMESPACE, key);
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let removed = batch.len();
        self.store.apply(batch)?;
        if let Some(dropped) = usage.mailboxes.remove(mailbox) {
            usage.total_bytes = usage.total_bytes.saturating_sub(dropped.bytes);
        }
        Ok(removed)
    }

    /// Deletes expired envelopes and tombstones in one write; returns how many envelopes
    /// expired. Reads one mailbox at a time, so memory stays within one mailbox's quota.
    pub(crate) fn sweep(&self, now: Timestamp) -> DhtResult<usize> {
        let mut usage = self.lock();
        let mut batch = WriteBatch::new();
        let mut expired: Vec<(MailboxKey, u64, Vec<u8>)> = Vec::new();
        let mailboxes: Vec<MailboxKey> = usage.mailboxes.keys().copied().collect();
        for mailbox in mailboxes {
            let held = self
                .store
                .scan_prefix(MAILBOX_NAMESPACE, &entry_prefix(&mailbox))?;
            for (key, value) in held {
                let entry = StoredEntry::decode(&value);
                if entry.as_ref().is_some_and(|entry| entry.live_at(now)) {
                    continue;
                }
                // One that does not decode was never counted, and goes all the same.
                if let Some(entry) = entry {
                    expired.push((mailbox, entry.len(), entry.sender));
                }
                batch.delete(MAILBOX_NAMESPACE, key);
            }
        }
        let tombstones = Key::from_segment(TOMBSTONE);
        for (key, value) in self.store.scan_prefix(MAILBOX_NAMESPACE, &tombstones)? {
            if tombstone_expiry(&value).is_none_or(|until| until <= now.unix_millis()) {
                batch.delete(MAILBOX_NAMESPACE, key);
            }
        }
        if !batch.is_empty() {
            self.store.apply(batch)?;
        }
        for (mailbox, len, sender) in &expired {
            usage.remove(mailbox, sender, *len);
        }
        Ok(expired.len())
    }

    /// (envelopes, bytes) held for `mailbox`, expired ones not swept yet included.
    #[cfg(test)]
    pub(crate) fn usage(&self, mailbox: &MailboxKey) -> (u64, u64) {
        let (envelopes, bytes, _) = self.lock().of(mailbox, &[]);
        (envelopes, bytes)
    }

    /// Bytes of envelopes held in the whole store.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    fn lock(&self) -> MutexGuard<'_, Usage> {
        // Counters change only after a successful write and never panic midway, so a poisoned
        // lock still guards consistent numbers.
        self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The decodable envelopes of `mailbox`, in arrival order.
    fn read_mailbox(&self, mailbox: &MailboxKey) -> DhtResult<Vec<(EntryId, StoredEntry)>> {
        let mut entries: Vec<(EntryId, StoredEntry)> = self
            .store
            .scan_prefix(MAILBOX_NAMESPACE, &entry_prefix(mailbox))?
            .into_iter()
            .filter_map(|(key, value)| {
                let (_, id) = parse_key(&key)?;
                Some((id, StoredEntry::decode(&value)?))
            })
            .collect();
        entries.sort_unstable_by_key(|(id, entry)| (entry.arrival, *id));
        Ok(entries)
    }
}

fn entry_prefix(mailbox: &MailboxKey) -> Key {
    Key::from_segment(ENTRY).with(mailbox.as_bytes())
}

fn entry_key(mailbox: &MailboxKey, id: &EntryId) -> Key {
    entry_prefix(mailbox).with(id.as_bytes())
}

fn tombstone_key(mailbox: &MailboxKey, id: &EntryId) -> Key {
    Key::from_segment(TOMBSTONE)
        .with(mailbox.as_bytes())
        .with(id.as_bytes())
}

/// The expiry a deposit gets: `ttl` from `now`, or a replica's own if that is within it.
fn lifetime(requested: Option<Timestamp>, now: Timestamp, ttl_ms: u64) -> Option<Timestamp> {
    let longest = now.unix_millis().saturating_add(ttl_ms);
    let Some(at) = requested else {
        return Some(Timestamp::from_unix_millis(longest));
    };
    (at > now && at.unix_millis() <= longest.saturating_add(LIFETIME_SLACK_MS)).then_some(at)
}

/// The mailbox and id of an `["e" | "t", mailbox, id]` key.
fn parse_key(key: &Key) -> Option<(MailboxKey, EntryId)> {
    let mut segments = key.segments().skip(1);
    let mailbox = <[u8; 32]>::try_from(segments.next()?).ok()?;
    let id = <[u8; 32]>::try_from(segments.next()?).ok()?;
    if segments.next().is_some() {
        return None;
    }
    Some((MailboxKey::from_bytes(mailbox), EntryId::from_bytes(id)))
}

/// Until when a tombstone is kept (Unix ms), if its value is well formed.
fn tombstone_expiry(value: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(value).ok().map(u64::from_be_bytes)
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// A refusal for a store failure. The sender sees the reason, so it names the step only; the
/// error itself (paths, backend details) stays in this node's log.
fn failed(step: &str, error: &StoreError) -> MailboxRefusal {
    tracing::warn!(%error, "mailbox holder store failed while {step}");
    MailboxRefusal::HolderFailed {
        reason: format!("{step} failed"),
    }
}

#[cfg(test)]
#[path = "holder_store_tests.rs"]
mod tests;

impl HolderStore {
    /// Which of `ids` this holder neither holds for `mailbox` nor saw acknowledged (what a
    /// holder handing over must still send).
    pub(crate) fn missing(
        &self,
        mailbox: &MailboxKey,
        ids: &[EntryId],
        now: Timestamp,
    ) -> DhtResult<Vec<EntryId>> {
        let mut missing = Vec::new();
        for id in ids {
            let held = self
                .store
                .get(MAILBOX_NAMESPACE, &entry_key(mailbox, id))?
                .and_then(|value| StoredEntry::decode(&value))
                .is_some_and(|entry| entry.expires_at > now.unix_millis());
            let acknowledged = self
                .store
                .get(MAILBOX_NAMESPACE, &tombstone_key(mailbox, id))?
                .is_some();
            if !held && !acknowledged {
                missing.push(*id);
            }
        }
        Ok(missing)
    }
}
