//! Property test: `Transaction` behaves like a model map with a pending overlay (and a stack of
//! savepoints), on a plain and on a sealed store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use spacepanda_core::{Key, MasterKey, MemoryStore, SealedStore, SharedStore, Transaction};

#[derive(Debug, Clone)]
enum Op {
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
    DeletePrefix(usize, Vec<u8>),
    Get(usize, Vec<u8>),
    Scan(usize, Vec<u8>),
    Commit,
    Rollback,
    Savepoint,
    /// Roll back to one of the open savepoints (index modulo how many are open), dropping the
    /// ones inside it.
    RollbackTo(usize),
    ReleaseInnermost,
}

const NAMESPACES: [&str; 2] = ["alpha", "beta"];

/// Two-segment keys drawn from a small alphabet so operations collide often.
fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    (0u8..3, 0u8..4).prop_map(|(a, b)| vec![a, b])
}

fn key(raw: &[u8]) -> Key {
    Key::from_segments(raw.iter().map(|b| [*b]))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let ns = 0usize..NAMESPACES.len();
    prop_oneof![
        4 => (ns.clone(), key_strategy(), proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(n, k, v)| Op::Put(n, k, v)),
        2 => (ns.clone(), key_strategy()).prop_map(|(n, k)| Op::Delete(n, k)),
        1 => (ns.clone(), 0u8..3).prop_map(|(n, a)| Op::DeletePrefix(n, vec![a])),
        3 => (ns.clone(), key_strategy()).prop_map(|(n, k)| Op::Get(n, k)),
        2 => (ns, proptest::collection::vec(0u8..3, 0..2)).prop_map(|(n, p)| Op::Scan(n, p)),
        1 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        2 => Just(Op::Savepoint),
        1 => (0usize..4).prop_map(Op::RollbackTo),
        1 => Just(Op::ReleaseInnermost),
    ]
}

type Model = BTreeMap<(usize, Vec<u8>), Vec<u8>>;

fn run(store: SharedStore, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut committed = Model::new();
    let mut pending = committed.clone();
    let mut txn = Transaction::begin(&store);
    // Open savepoints, outermost first, with the model's pending state when each was taken.
    let mut savepoints: Vec<(spacepanda_core::Savepoint, Model)> = Vec::new();
    for op in ops {
        match op {
            Op::Put(n, k, v) => {
                txn.put(NAMESPACES[n], key(&k), v.clone()).unwrap();
                pending.insert((n, k), v);
            }
            Op::Delete(n, k) => {
                txn.delete(NAMESPACES[n], key(&k)).unwrap();
                pending.remove(&(n, k));
            }
            Op::DeletePrefix(n, p) => {
                let removed = txn.delete_prefix(NAMESPACES[n], &key(&p)).unwrap();
                let before = pending.len();
                pending.retain(|(pn, pk), _| !(*pn == n && pk.starts_with(&p)));
                prop_assert_eq!(removed, before - pending.len());
            }
            Op::Get(n, k) => {
                prop_assert_eq!(
                    txn.get(NAMESPACES[n], &key(&k)).unwrap(),
                    pending.get(&(n, k)).cloned()
                );
            }
            Op::Scan(n, p) => {
                let got = txn.scan_prefix(NAMESPACES[n], &key(&p)).unwrap();
                let want: Vec<(Key, Vec<u8>)> = pending
                    .iter()
                    .filter(|((pn, pk), _)| *pn == n && pk.starts_with(&p))
                    .map(|((_, pk), v)| (key(pk), v.clone()))
                    .collect();
                prop_assert_eq!(got, want);
            }
            Op::Commit => {
                txn.commit().unwrap();
                committed = pending.clone();
                txn = Transaction::begin(&store);
                savepoints.clear();
            }
            Op::Rollback => {
                drop(txn);
                pending = committed.clone();
                txn = Transaction::begin(&store);
                savepoints.clear();
            }
            Op::Savepoint => savepoints.push((txn.savepoint(), pending.clone())),
            Op::RollbackTo(choice) => {
                if !savepoints.is_empty() {
                    let index = choice % savepoints.len();
                    savepoints.truncate(index + 1);
                    let (savepoint, before) = savepoints.pop().unwrap();
                    txn.rollback_to_savepoint(savepoint).unwrap();
                    pending = before;
                }
            }
            Op::ReleaseInnermost => {
                if let Some((savepoint, _)) = savepoints.pop() {
                    txn.release_savepoint(savepoint).unwrap();
                }
            }
        }
        // The store itself only ever shows committed state.
        for (n, namespace) in NAMESPACES.iter().enumerate() {
            let mut stored = store.scan_prefix(namespace, &Key::empty()).unwrap();
            stored.sort();
            let want: Vec<(Key, Vec<u8>)> = committed
                .iter()
                .filter(|((pn, _), _)| *pn == n)
                .map(|((_, pk), v)| (key(pk), v.clone()))
                .collect();
            prop_assert_eq!(stored, want);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn transaction_matches_model_on_memory(ops in proptest::collection::vec(op_strategy(), 1..60)) {
        run(Arc::new(MemoryStore::new()), ops)?;
    }

    #[test]
    fn transaction_matches_model_on_sealed_memory(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        let sealed = SealedStore::create_with_key(MemoryStore::new(), &MasterKey::from_bytes([7; 32])).unwrap();
        run(Arc::new(sealed), ops)?;
    }
}
