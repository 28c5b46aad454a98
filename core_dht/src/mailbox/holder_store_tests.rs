#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use spacepanda_core::{FailPoint, FailingStore, KeyValueStore, RedbStore};
use tempfile::TempDir;

use super::*;

const SEED: u64 = 20_240_611;
const NOW: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);
const HOUR_MS: u64 = 60 * 60 * 1000;
const TTL_MS: u64 = 24 * HOUR_MS;
const ALICE: &[u8] = b"alice-peer";
const BOB: &[u8] = b"bob-peer";

fn limits() -> HolderLimits {
    HolderLimits {
        max_envelope_len: 1024,
        max_envelopes_per_mailbox: 50,
        max_bytes_per_mailbox: 20_000,
        max_envelopes_per_sender: 50,
        max_total_bytes: 100_000,
        ttl_ms: TTL_MS,
    }
}

struct Fixture {
    dir: TempDir,
    store: SharedStore,
    holder: HolderStore,
}

impl Fixture {
    fn new(limits: HolderLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(RedbStore::create(Self::file(&dir)).unwrap());
        let holder = HolderStore::open(store.clone(), limits).unwrap();
        Self { dir, store, holder }
    }

    fn file(dir: &TempDir) -> PathBuf {
        dir.path().join("holder.redb")
    }

    /// Drops the store and the holder, and opens both again from the file.
    fn reopen(self, limits: HolderLimits) -> Self {
        let Self { dir, store, holder } = self;
        drop(holder);
        drop(store);
        let store: SharedStore = Arc::new(RedbStore::open(Self::file(&dir)).unwrap());
        let holder = HolderStore::open(store.clone(), limits).unwrap();
        Self { dir, store, holder }
    }

    fn tombstones(&self, mailbox: &MailboxKey) -> usize {
        let prefix = Key::from_segment(TOMBSTONE).with(mailbox.as_bytes());
        self.store
            .scan_prefix(MAILBOX_NAMESPACE, &prefix)
            .unwrap()
            .len()
    }
}

fn mailbox(n: u8) -> MailboxKey {
    MailboxKey::from_bytes([n; 32])
}

fn envelope(rng: &mut ChaCha20Rng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rng.fill(bytes.as_mut_slice());
    bytes
}

fn at(offset_ms: u64) -> Timestamp {
    Timestamp::from_unix_millis(NOW.unix_millis() + offset_ms)
}

fn deposit(
    holder: &HolderStore,
    mailbox: &MailboxKey,
    bytes: &[u8],
    sender: &[u8],
) -> DepositOutcome {
    holder.deposit(mailbox, bytes, sender, None, NOW).unwrap()
}

#[test]
fn holder_store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<HolderStore>();
}

#[test]
fn a_deposit_is_paged_back_as_stored() {
    let f = Fixture::new(limits());
    let mut rng = ChaCha20Rng::seed_from_u64(SEED);
    let bytes = envelope(&mut rng, 300);
    assert_eq!(
        deposit(&f.holder, &mailbox(1), &bytes, ALICE),
        DepositOutcome::Stored
    );

    let (page, more) = f.holder.page(&mailbox(1), None, 10, 1 << 20, NOW).unwrap();
    assert!(!more);
    assert_eq!(
        page,
        vec![HeldEnvelope {
            id: EntryId::of(&bytes),
            bytes: bytes.clone(),
            sender: ALICE.to_vec(),
            expires_at: at(TTL_MS),
        }]
    );
    assert_eq!(f.holder.usage(&mailbox(1)), (1, 300));
    assert_eq!(f.holder.usage(&mailbox(2)), (0, 0));
    assert_eq!(f.holder.total_bytes(), 300);
    assert!(
        f.holder
            .page(&mailbox(2), None, 10, 1 << 20, NOW)
            .unwrap()
            .0
            .is_empty()
    );
}

#[test]
fn a_second_deposit_of_the_same_bytes_is_stored_once() {
    let f = Fixture::new(HolderLimits {
        max_envelopes_per_sender: 1,
        ..limits()
    });
    let bytes = b"the same envelope".to_vec();
    assert_eq!(
        deposit(&f.holder, &mailbox(1), &bytes, ALICE),
        DepositOutcome::Stored
    );
    assert_eq!(
        deposit(&f.holder, &mailbox(1), &bytes, ALICE),
        DepositOutcome::AlreadyHeld
    );
    // A replica of it handed over by another holder, with its own expiry.
    let replica = f
        .holder
        .deposit(&mailbox(1), &bytes, BOB, Some(at(HOUR_MS)), NOW);
    assert_eq!(replica, Ok(DepositOutcome::AlreadyHeld));
    assert_eq!(f.holder.usage(&mailbox(1)), (1, len_u64(bytes.len())));
    assert_eq!(f.holder.all_in(&mailbox(1), NOW).unwrap().len(), 1);
    // No quota was taken: bob's one slot is still free.
    assert_eq!(
        deposit(&f.holder, &mailbox(1), b"bob's own", BOB),
        DepositOutcome::Stored
    );
}

#[test]
fn an_acknowledged_envelope_is_deleted_and_not_taken_again() {
    let f = Fixture::new(limits());
    let bytes = b"read me once".to_vec();
    let id = EntryId::of(&bytes);
    deposit(&f.holder, &mailbox(1), &bytes, ALICE);
    deposit(&f.holder, &mailbox(1), b"another one", ALICE);

    let unknown = EntryId::of(b"never deposited");
    assert_eq!(
        f.holder
            .acknowledge(&mailbox(1), &[id, id, unknown], NOW)
            .unwrap(),
        1
    );
    assert_eq!(f.holder.usage(&mailbox(1)), (1, 11));
    let (page, _) = f.holder.page(&mailbox(1), None, 10, 1 << 20, NOW).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].bytes, b"another one");

    assert_eq!(
        deposit(&f.holder, &mailbox(1), &bytes, BOB),
        DepositOutcome::AlreadyDelivered
    );
    let late_replica =
        f.holder
            .deposit(&mailbox(1), b"never deposited", BOB, Some(at(HOUR_MS)), NOW);
    assert_eq!(late_replica, Ok(DepositOutcome::AlreadyDelivered));
    assert_eq!(f.holder.usage(&mailbox(1)), (1, 11));
    // The tombstone is for this mailbox only.
    assert_eq!(
        deposit(&f.holder, &mailbox(2), &bytes, BOB),
        DepositOutcome::Stored
    );

    // Once the tombstone's lifetime is over and swept, the bytes are a new deposit.
    let later = at(TTL_MS + 1);
    f.holder.sweep(later).unwrap();
    assert_eq!(f.tombstones(&mailbox(1)), 0);
    let again = f.holder.deposit(&mailbox(1), &bytes, ALICE, None, later);
    assert_eq!(again, Ok(DepositOutcome::Stored));
}

#[test]
fn envelopes_that_are_empty_or_too_long_or_from_long_names_are_refused() {
    let f = Fixture::new(limits());
    let refused = f
        .holder
        .deposit(&mailbox(1), &[7u8; 1025], ALICE, None, NOW);
    assert_eq!(
        refused,
        Err(MailboxRefusal::Oversized {
            len: 1025,
            max: 1024
        })
    );
    let refused = f.holder.deposit(&mailbox(1), &[], ALICE, None, NOW);
    assert_eq!(
        refused,
        Err(MailboxRefusal::Oversized { len: 0, max: 1024 })
    );
    let refused = f
        .holder
        .deposit(&mailbox(1), b"fine", &[1u8; 65], None, NOW);
    assert!(matches!(refused, Err(MailboxRefusal::HolderFailed { .. })));
    assert_eq!(
        deposit(&f.holder, &mailbox(1), &[7u8; 1024], &[1u8; 64]),
        DepositOutcome::Stored
    );
    assert_eq!(f.holder.usage(&mailbox(1)), (1, 1024));
}

#[test]
fn a_mailbox_is_full_by_count_and_by_bytes() {
    let f = Fixture::new(HolderLimits {
        max_envelopes_per_mailbox: 3,
        max_bytes_per_mailbox: 250,
        ..limits()
    });
    for n in 0u8..3 {
        assert_eq!(
            deposit(&f.holder, &mailbox(1), &[n; 10], ALICE),
            DepositOutcome::Stored
        );
    }
    let refused = f.holder.deposit(&mailbox(1), &[9; 10], BOB, None, NOW);
    assert_eq!(
        refused,
        Err(MailboxRefusal::MailboxFull {
            held: 3,
            held_bytes: 30,
            max: 3,
            max_bytes: 250
        })
    );
    assert_eq!(f.holder.usage(&mailbox(1)), (3, 30));

    assert_eq!(
        deposit(&f.holder, &mailbox(2), &[1; 200], ALICE),
        DepositOutcome::Stored
    );
    let refused = f.holder.deposit(&mailbox(2), &[2; 51], ALICE, None, NOW);
    assert_eq!(
        refused,
        Err(MailboxRefusal::MailboxFull {
            held: 1,
            held_bytes: 200,
            max: 3,
            max_bytes: 250
        })
    );
    assert_eq!(
        deposit(&f.holder, &mailbox(2), &[2; 50], ALICE),
        DepositOutcome::Stored
    );
    assert_eq!(f.holder.usage(&mailbox(2)), (2, 250));
}

#[test]
fn one_sender_cannot_take_a_whole_mailbox() {
    let f = Fixture::new(HolderLimits {
        max_envelopes_per_sender: 2,
        ..limits()
    });
    deposit(&f.holder, &mailbox(1), b"one", ALICE);
    deposit(&f.holder, &mailbox(1), b"two", ALICE);
    let refused = f.holder.deposit(&mailbox(1), b"three", ALICE, None, NOW);
    assert_eq!(
        refused,
        Err(MailboxRefusal::SenderQuota { held: 2, max: 2 })
    );
    assert_eq!(
        deposit(&f.holder, &mailbox(1), b"three", BOB),
        DepositOutcome::Stored
    );
    // The quota is per mailbox.
    assert_eq!(
        deposit(&f.holder, &mailbox(2), b"four", ALICE),
        DepositOutcome::Stored
    );
    // Fetching frees the sender's slot.
    f.holder
        .acknowledge(&mailbox(1), &[EntryId::of(b"one")], NOW)
        .unwrap();
    assert_eq!(
        deposit(&f.holder, &mailbox(1), b"five", ALICE),
        DepositOutcome::Stored
    );
    assert_eq!(f.holder.usage(&mailbox(1)), (3, 12));
}

#[test]
fn the_whole_store_is_bounded_and_checked_before_the_mailbox() {
    let f = Fixture::new(HolderLimits {
        max_total_bytes: 300,
        max_envelopes_per_mailbox: 2,
        ..limits()
    });
    deposit(&f.holder, &mailbox(1), &[1; 100], ALICE);
    deposit(&f.holder, &mailbox(1), &[2; 100], ALICE);
    deposit(&f.holder, &mailbox(2), &[3; 100], ALICE);
    // Mailbox 1 is full too, but the holder's bound comes first.
    assert_eq!(
        f.holder.deposit(&mailbox(1), &[4; 1], ALICE, None, NOW),
        Err(MailboxRefusal::HolderFull)
    );
    assert_eq!(
        f.holder.deposit(&mailbox(3), &[4; 1], ALICE, None, NOW),
        Err(MailboxRefusal::HolderFull)
    );
    // Oversized is checked before anything else.
    assert!(matches!(
        f.holder.deposit(&mailbox(3), &[4; 2000], ALICE, None, NOW),
        Err(MailboxRefusal::Oversized { .. })
    ));
    assert_eq!(f.holder.total_bytes(), 300);
    assert!(f.holder.mailboxes().unwrap().len() == 2);
}

#[test]
fn a_replica_keeps_its_lifetime_within_bounds() {
    let f = Fixture::new(limits());
    let kept = f
        .holder
        .deposit(&mailbox(1), b"replica", BOB, Some(at(HOUR_MS)), NOW);
    assert_eq!(kept, Ok(DepositOutcome::Stored));
    let all = f.holder.all_in(&mailbox(1), NOW).unwrap();
    assert_eq!(all[0].expires_at, at(HOUR_MS));

    let slack = 5 * 60 * 1000;
    let skewed = f
        .holder
        .deposit(&mailbox(1), b"skewed", BOB, Some(at(TTL_MS + slack)), NOW);
    assert_eq!(skewed, Ok(DepositOutcome::Stored));
    for bad in [
        NOW,
        Timestamp::from_unix_millis(NOW.unix_millis() - 1),
        at(TTL_MS + slack + 1),
    ] {
        let refused = f.holder.deposit(&mailbox(1), b"bad", BOB, Some(bad), NOW);
        assert_eq!(refused, Err(MailboxRefusal::BadLifetime), "expiry {bad:?}");
    }
    assert_eq!(f.holder.usage(&mailbox(1)).0, 2);
}

#[test]
fn paging_walks_every_envelope_exactly_once_in_bounds() {
    let f = Fixture::new(limits());
    let mut rng = ChaCha20Rng::seed_from_u64(SEED);
    let mut deposited = Vec::new();
    for _ in 0..40 {
        let len = rng.gen_range(10..=200);
        let bytes = envelope(&mut rng, len);
        deposited.push(EntryId::of(&bytes));
        deposit(&f.holder, &mailbox(1), &bytes, ALICE);
    }
    deposit(&f.holder, &mailbox(2), b"elsewhere", ALICE);

    let (max_count, max_bytes) = (3, 250);
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let (page, more) = f
            .holder
            .page(&mailbox(1), after, max_count, max_bytes, NOW)
            .unwrap();
        pages += 1;
        assert!(!page.is_empty());
        assert!(page.len() <= max_count);
        let size: usize = page.iter().map(|e| e.bytes.len()).sum();
        assert!(page.len() == 1 || size <= max_bytes, "page of {size} bytes");
        for held in &page {
            assert_eq!(held.id, EntryId::of(&held.bytes));
        }
        seen.extend(page.iter().map(|e| e.id));
        after = page.last().map(|e| e.id);
        if !more {
            break;
        }
        assert!(pages < 100);
    }
    // In the order they came: a sender's envelopes reach the recipient's engine in the
    // order they were sent (MLS tolerates little reordering within one sender's ratchet).
    assert_eq!(seen, deposited, "every envelope once, in arrival order");
    assert!(pages >= 14);

    // The order survives a reopen, and new arrivals come after the old ones.
    let f = f.reopen(limits());
    let latest = envelope(&mut rng, 50);
    deposit(&f.holder, &mailbox(1), &latest, ALICE);
    let all: Vec<EntryId> = f
        .holder
        .all_in(&mailbox(1), NOW)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all[..deposited.len()], deposited[..]);
    assert_eq!(all.last(), Some(&EntryId::of(&latest)));

    // The first envelope is returned even when it alone is over the byte bound.
    let (page, more) = f.holder.page(&mailbox(1), None, 10, 1, NOW).unwrap();
    assert_eq!(page.len(), 1);
    assert!(more);
}

#[test]
fn expired_envelopes_are_not_returned_and_sweep_frees_them() {
    let f = Fixture::new(limits());
    let short = f
        .holder
        .deposit(&mailbox(1), b"short-lived", ALICE, Some(at(HOUR_MS)), NOW);
    assert_eq!(short, Ok(DepositOutcome::Stored));
    deposit(&f.holder, &mailbox(1), b"long-lived", ALICE);
    let stale = f
        .holder
        .deposit(&mailbox(2), b"stale", BOB, Some(at(HOUR_MS)), NOW);
    assert_eq!(stale, Ok(DepositOutcome::Stored));

    let later = at(2 * HOUR_MS);
    let (page, more) = f
        .holder
        .page(&mailbox(1), None, 10, 1 << 20, later)
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].bytes, b"long-lived");
    assert!(!more);
    assert!(f.holder.all_in(&mailbox(2), later).unwrap().is_empty());
    // Still counted until swept.
    assert_eq!(f.holder.usage(&mailbox(1)), (2, 21));

    // An expired copy not swept yet is replaced by a new deposit, counted once.
    let renewed = f.holder.deposit(&mailbox(2), b"stale", BOB, None, later);
    assert_eq!(renewed, Ok(DepositOutcome::Stored));
    assert_eq!(f.holder.usage(&mailbox(2)), (1, 5));

    assert_eq!(f.holder.sweep(later).unwrap(), 1);
    assert_eq!(f.holder.usage(&mailbox(1)), (1, 10));
    assert_eq!(f.holder.total_bytes(), 15);
    assert_eq!(f.holder.all_in(&mailbox(2), later).unwrap().len(), 1);
    assert_eq!(f.holder.sweep(later).unwrap(), 0);

    assert_eq!(f.holder.sweep(at(3 * TTL_MS)).unwrap(), 2);
    assert_eq!(f.holder.total_bytes(), 0);
    assert!(f.holder.mailboxes().unwrap().is_empty());
    assert!(
        f.store
            .scan_prefix(MAILBOX_NAMESPACE, &Key::empty())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn counters_and_entries_survive_a_reopen() {
    let limits = HolderLimits {
        max_envelopes_per_sender: 3,
        ..limits()
    };
    let f = Fixture::new(limits.clone());
    for n in 0u8..3 {
        deposit(&f.holder, &mailbox(1), &[n; 40], ALICE);
    }
    deposit(&f.holder, &mailbox(2), &[9; 70], BOB);
    let acked = EntryId::of(&[0u8; 40]);
    f.holder.acknowledge(&mailbox(1), &[acked], NOW).unwrap();
    let before = f.holder.all_in(&mailbox(1), NOW).unwrap();

    let f = f.reopen(limits);
    assert_eq!(f.holder.usage(&mailbox(1)), (2, 80));
    assert_eq!(f.holder.usage(&mailbox(2)), (1, 70));
    assert_eq!(f.holder.total_bytes(), 150);
    assert_eq!(f.holder.all_in(&mailbox(1), NOW).unwrap(), before);
    assert_eq!(
        deposit(&f.holder, &mailbox(1), &[0u8; 40], BOB),
        DepositOutcome::AlreadyDelivered
    );
    assert_eq!(
        deposit(&f.holder, &mailbox(1), &[1u8; 40], BOB),
        DepositOutcome::AlreadyHeld
    );
    // The per-sender count was rebuilt too: alice has 2 of 3.
    assert_eq!(
        deposit(&f.holder, &mailbox(1), &[5u8; 40], ALICE),
        DepositOutcome::Stored
    );
    assert_eq!(
        f.holder.deposit(&mailbox(1), &[6u8; 40], ALICE, None, NOW),
        Err(MailboxRefusal::SenderQuota { held: 3, max: 3 })
    );
}

#[test]
fn entries_that_do_not_decode_are_dropped_at_open() {
    let f = Fixture::new(limits());
    deposit(&f.holder, &mailbox(1), b"good", ALICE);
    let mut batch = WriteBatch::new();
    let garbage = entry_key(&mailbox(1), &EntryId::of(b"garbage"));
    batch.put(MAILBOX_NAMESPACE, garbage.clone(), vec![0xff; 9]);
    let misshapen = Key::from_segments([&b"e"[..], b"short", b"key"]);
    let valid = StoredEntry {
        bytes: b"x".to_vec(),
        sender: ALICE.to_vec(),
        expires_at: u64::MAX,
        arrival: 0,
    };
    batch.put(MAILBOX_NAMESPACE, misshapen.clone(), valid.encode());
    f.store.apply(batch).unwrap();

    let f = f.reopen(limits());
    assert_eq!(f.holder.usage(&mailbox(1)), (1, 4));
    assert_eq!(f.holder.all_in(&mailbox(1), NOW).unwrap().len(), 1);
    assert_eq!(f.store.get(MAILBOX_NAMESPACE, &garbage).unwrap(), None);
    assert_eq!(f.store.get(MAILBOX_NAMESPACE, &misshapen).unwrap(), None);
}

#[test]
fn a_mailbox_handed_over_is_dropped_without_tombstones() {
    let f = Fixture::new(limits());
    deposit(&f.holder, &mailbox(2), b"b1", ALICE);
    deposit(&f.holder, &mailbox(1), b"a1", ALICE);
    deposit(&f.holder, &mailbox(1), b"a2", BOB);
    let expiring = f
        .holder
        .deposit(&mailbox(1), b"a3", BOB, Some(at(HOUR_MS)), NOW);
    assert_eq!(expiring, Ok(DepositOutcome::Stored));
    assert_eq!(f.holder.mailboxes().unwrap(), vec![mailbox(1), mailbox(2)]);

    let handed: BTreeSet<Vec<u8>> = f
        .holder
        .all_in(&mailbox(1), at(2 * HOUR_MS))
        .unwrap()
        .into_iter()
        .map(|e| e.bytes)
        .collect();
    assert_eq!(handed, BTreeSet::from([b"a1".to_vec(), b"a2".to_vec()]));

    assert_eq!(f.holder.drop_mailbox(&mailbox(1)).unwrap(), 3);
    assert_eq!(f.holder.drop_mailbox(&mailbox(1)).unwrap(), 0);
    assert_eq!(f.holder.mailboxes().unwrap(), vec![mailbox(2)]);
    assert_eq!(f.holder.usage(&mailbox(1)), (0, 0));
    assert_eq!(f.holder.total_bytes(), 2);
    assert!(f.holder.all_in(&mailbox(1), NOW).unwrap().is_empty());
    assert_eq!(f.tombstones(&mailbox(1)), 0);
    assert_eq!(
        deposit(&f.holder, &mailbox(1), b"a1", ALICE),
        DepositOutcome::Stored
    );
}

#[test]
fn tombstones_per_mailbox_are_bounded_keeping_the_latest() {
    let f = Fixture::new(HolderLimits {
        max_envelopes_per_mailbox: 2,
        ..limits()
    });
    let ids: Vec<EntryId> = (0u8..10).map(|n| EntryId::of(&[n])).collect();
    f.holder.acknowledge(&mailbox(1), &ids[..5], NOW).unwrap();
    f.holder
        .acknowledge(&mailbox(1), &ids[5..], at(1000))
        .unwrap();
    assert_eq!(f.tombstones(&mailbox(1)), 8);
    for n in 5u8..10 {
        assert_eq!(
            deposit(&f.holder, &mailbox(1), &[n], ALICE),
            DepositOutcome::AlreadyDelivered
        );
    }
    let forgotten = (0u8..5)
        .filter(|n| deposit(&f.holder, &mailbox(1), &[*n], ALICE) == DepositOutcome::Stored)
        .count();
    assert_eq!(forgotten, 2);
}

#[test]
fn a_failed_write_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(FailingStore::new(
        RedbStore::create(dir.path().join("h.redb")).unwrap(),
    ));
    let holder = HolderStore::open(failing.clone(), limits()).unwrap();
    deposit(&holder, &mailbox(1), b"kept", ALICE);

    failing.fail_at(FailPoint::Apply(1));
    let refused = holder.deposit(&mailbox(1), b"lost", ALICE, None, NOW);
    assert!(
        matches!(refused, Err(MailboxRefusal::HolderFailed { .. })),
        "{refused:?}"
    );
    assert_eq!(holder.usage(&mailbox(1)), (1, 4));

    failing.fail_at(FailPoint::Apply(1));
    assert!(
        holder
            .acknowledge(&mailbox(1), &[EntryId::of(b"kept")], NOW)
            .is_err()
    );
    assert_eq!(holder.usage(&mailbox(1)), (1, 4));

    failing.fail_at(FailPoint::Get(1));
    let refused = holder.deposit(&mailbox(1), b"lost", ALICE, None, NOW);
    assert!(matches!(refused, Err(MailboxRefusal::HolderFailed { .. })));

    assert_eq!(
        deposit(&holder, &mailbox(1), b"lost", ALICE),
        DepositOutcome::Stored
    );
    assert_eq!(holder.usage(&mailbox(1)), (2, 8));
    assert_eq!(holder.all_in(&mailbox(1), NOW).unwrap().len(), 2);
}
