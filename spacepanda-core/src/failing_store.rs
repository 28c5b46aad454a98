//! A store that fails on purpose: fault injection for the layers above.
//!
//! # Why
//!
//! "One operation, one transaction" is a claim about failure: whatever call of an operation
//! fails, nothing of it may be written and the engine must be able to carry on. The only way to
//! check it is to make every storage call of an operation fail, one at a time, and look at what
//! is left. [`FailingStore`] wraps any [`KeyValueStore`] (as redb tests its file backend behind
//! a failing one), counts the calls and fails the n-th `apply`, `get` or `scan_prefix` since it
//! was armed with a typed [`StoreError::Backend`] whose source is an [`InjectedFault`].
//!
//! A failed `apply` writes nothing (the fault is raised before the inner store is touched), so
//! the wrapper keeps the atomicity contract of the store it wraps: a test that finds a
//! half-written store has found a bug above, not an artefact of the injection.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::{Key, KeyValueStore, StoreError, StoreResult, WriteBatch};

/// Which call fails: the n-th call of one kind (counted from 1) since the store was armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailPoint {
    /// The n-th [`apply`](KeyValueStore::apply).
    Apply(u64),
    /// The n-th [`get`](KeyValueStore::get).
    Get(u64),
    /// The n-th [`scan_prefix`](KeyValueStore::scan_prefix).
    Scan(u64),
}

impl FailPoint {
    /// Which call of its kind it names (counted from 1).
    pub fn call(self) -> u64 {
        match self {
            Self::Apply(n) | Self::Get(n) | Self::Scan(n) => n,
        }
    }
}

impl std::fmt::Display for FailPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Apply(n) => write!(f, "apply #{n}"),
            Self::Get(n) => write!(f, "get #{n}"),
            Self::Scan(n) => write!(f, "scan_prefix #{n}"),
        }
    }
}

/// The source of every error a [`FailingStore`] injects: which call it failed, so a test can
/// tell an injected fault from a real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault {
    /// The call that failed (for a sticky fault, the call that failed, not the one armed).
    pub failed: FailPoint,
}

impl std::fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "injected fault at {} since the store was armed",
            self.failed
        )
    }
}

impl std::error::Error for InjectedFault {}

/// How many calls of each kind a [`FailingStore`] has seen since it was last armed (or made).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Calls of `apply`, including a failed one.
    pub applies: u64,
    /// Calls of `get`, including a failed one.
    pub gets: u64,
    /// Calls of `scan_prefix`, including a failed one.
    pub scans: u64,
}

#[derive(Debug, Default)]
struct State {
    armed: Option<(FailPoint, bool)>,
    counts: CallCounts,
    injected: u64,
}

/// A [`KeyValueStore`] over `S` that fails the calls it is told to.
///
/// Disarmed it is `S` plus counters. [`fail_at`](Self::fail_at) fails exactly one call (a
/// transient error); [`fail_from`](Self::fail_from) fails that call and every later call of the
/// same kind until [`disarm`](Self::disarm) (a disk that stays broken). Arming resets the
/// counters, so `FailPoint::Get(3)` means "the third `get` from now".
///
/// ```
/// use spacepanda_core::{FailPoint, FailingStore, Key, KeyValueStore, MemoryStore, WriteBatch};
///
/// let store = FailingStore::new(MemoryStore::new());
/// store.fail_at(FailPoint::Apply(1));
/// let mut batch = WriteBatch::new();
/// batch.put("notes", Key::from_segment("a"), b"1".to_vec());
/// assert!(store.apply(batch.clone()).is_err()); // injected, nothing written
/// assert_eq!(store.get("notes", &Key::from_segment("a"))?, None);
/// store.apply(batch)?; // a one-shot fault: the next apply goes through
/// assert_eq!(store.faults_injected(), 1);
/// # Ok::<(), spacepanda_core::StoreError>(())
/// ```
#[derive(Debug)]
pub struct FailingStore<S> {
    inner: S,
    state: Mutex<State>,
}

impl<S: KeyValueStore> FailingStore<S> {
    /// Wraps `inner`, disarmed.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is counters and a flag, valid at every instant: a panic elsewhere while it
        // was held leaves nothing half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn arm(&self, point: FailPoint, sticky: bool) {
        let mut state = self.lock();
        *state = State {
            armed: Some((point, sticky)),
            ..State::default()
        };
    }

    /// Fails exactly the call `point` names (counted from now), and no other.
    pub fn fail_at(&self, point: FailPoint) {
        self.arm(point, false);
    }

    /// Fails the call `point` names (counted from now) and every later call of the same kind,
    /// until [`disarm`](Self::disarm).
    pub fn fail_from(&self, point: FailPoint) {
        self.arm(point, true);
    }

    /// Stops failing; the counters keep counting.
    pub fn disarm(&self) {
        self.lock().armed = None;
    }

    /// Calls seen since the store was last armed (or made).
    pub fn calls(&self) -> CallCounts {
        self.lock().counts
    }

    /// How many calls failed on purpose since the store was last armed (or made).
    pub fn faults_injected(&self) -> u64 {
        self.lock().injected
    }

    /// The wrapped store (reading it directly bypasses counting and faults).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Counts one call of `kind` and decides whether it fails.
    fn check(&self, kind: Kind) -> StoreResult<()> {
        let mut state = self.lock();
        let counter = match kind {
            Kind::Apply => &mut state.counts.applies,
            Kind::Get => &mut state.counts.gets,
            Kind::Scan => &mut state.counts.scans,
        };
        *counter += 1;
        let this = kind.point(*counter);
        let fails = match state.armed {
            Some((point, false)) => point == this,
            Some((point, true)) => Kind::of(point) == kind && point.call() <= this.call(),
            None => false,
        };
        if !fails {
            return Ok(());
        }
        state.injected += 1;
        Err(StoreError::backend(
            "failing store",
            kind.operation(),
            InjectedFault { failed: this },
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Apply,
    Get,
    Scan,
}

impl Kind {
    fn of(point: FailPoint) -> Self {
        match point {
            FailPoint::Apply(_) => Self::Apply,
            FailPoint::Get(_) => Self::Get,
            FailPoint::Scan(_) => Self::Scan,
        }
    }

    fn point(self, n: u64) -> FailPoint {
        match self {
            Self::Apply => FailPoint::Apply(n),
            Self::Get => FailPoint::Get(n),
            Self::Scan => FailPoint::Scan(n),
        }
    }

    /// The operation name [`StoreError::Backend`] reports, as the other backends name theirs.
    fn operation(self) -> &'static str {
        match self {
            Self::Apply => "apply",
            Self::Get => "get",
            Self::Scan => "scan",
        }
    }
}

impl<S: KeyValueStore> KeyValueStore for FailingStore<S> {
    fn get(&self, namespace: &str, key: &Key) -> StoreResult<Option<Vec<u8>>> {
        self.check(Kind::Get)?;
        self.inner.get(namespace, key)
    }

    fn scan_prefix(&self, namespace: &str, prefix: &Key) -> StoreResult<Vec<(Key, Vec<u8>)>> {
        self.check(Kind::Scan)?;
        self.inner.scan_prefix(namespace, prefix)
    }

    fn apply(&self, batch: WriteBatch) -> StoreResult<()> {
        // Before the inner store sees the batch: an injected failure writes nothing.
        self.check(Kind::Apply)?;
        self.inner.apply(batch)
    }

    // Not a fault point: it is asked once, when a sealed store is created, and the fault
    // kinds count the calls the layers above make while working.
    fn is_empty(&self) -> StoreResult<bool> {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::error::Error as _;

    use super::*;
    use crate::MemoryStore;

    fn batch(key: &str, value: &[u8]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put("ns", Key::from_segment(key), value.to_vec());
        batch
    }

    fn injected(error: &StoreError) -> FailPoint {
        let StoreError::Backend { source, .. } = error else {
            panic!("not a backend error: {error:?}");
        };
        source.downcast_ref::<InjectedFault>().unwrap().failed
    }

    #[test]
    fn a_failed_apply_writes_nothing_of_its_batch() {
        let store = FailingStore::new(MemoryStore::new());
        store.apply(batch("kept", b"1")).unwrap();
        store.fail_at(FailPoint::Apply(1));
        let mut two = batch("a", b"2");
        two.put("ns", Key::from_segment("kept"), b"overwritten".to_vec());
        let error = store.apply(two).unwrap_err();
        assert_eq!(injected(&error), FailPoint::Apply(1));
        assert_eq!(
            store.inner().dump().unwrap(),
            vec![("ns".to_owned(), Key::from_segment("kept"), b"1".to_vec())]
        );
    }

    #[test]
    fn only_the_nth_call_of_the_armed_kind_fails_and_counting_restarts_when_armed() {
        let store = FailingStore::new(MemoryStore::new());
        store.apply(batch("a", b"1")).unwrap();
        store.get("ns", &Key::from_segment("a")).unwrap();
        store.fail_at(FailPoint::Get(3));
        assert_eq!(store.calls(), CallCounts::default());
        // Scans and applies do not count towards a get fault.
        store.scan_prefix("ns", &Key::empty()).unwrap();
        store.apply(batch("b", b"2")).unwrap();
        store.get("ns", &Key::from_segment("a")).unwrap();
        store.get("ns", &Key::from_segment("a")).unwrap();
        let error = store.get("ns", &Key::from_segment("a")).unwrap_err();
        assert_eq!(injected(&error), FailPoint::Get(3));
        assert!(error.to_string().contains("injected fault at get #3"));
        assert_eq!(
            store.get("ns", &Key::from_segment("a")).unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            store.calls(),
            CallCounts {
                applies: 1,
                gets: 4,
                scans: 1
            }
        );
        assert_eq!(store.faults_injected(), 1);
    }

    #[test]
    fn a_scan_fault_fails_the_scan_and_reports_it() {
        let store = FailingStore::new(MemoryStore::new());
        store.fail_at(FailPoint::Scan(2));
        store.scan_prefix("ns", &Key::empty()).unwrap();
        let error = store.scan_prefix("ns", &Key::empty()).unwrap_err();
        assert_eq!(injected(&error), FailPoint::Scan(2));
        assert!(error.source().is_some());
        store.scan_prefix("ns", &Key::empty()).unwrap();
    }

    #[test]
    fn a_sticky_fault_fails_every_later_call_of_its_kind_until_disarmed() {
        let store = FailingStore::new(MemoryStore::new());
        store.fail_from(FailPoint::Apply(2));
        store.apply(batch("a", b"1")).unwrap();
        assert_eq!(
            injected(&store.apply(batch("b", b"2")).unwrap_err()),
            FailPoint::Apply(2)
        );
        assert_eq!(
            injected(&store.apply(batch("c", b"3")).unwrap_err()),
            FailPoint::Apply(3)
        );
        // Reads still work: the fault is on one kind of call.
        assert_eq!(
            store.get("ns", &Key::from_segment("a")).unwrap(),
            Some(b"1".to_vec())
        );
        store.disarm();
        store.apply(batch("d", b"4")).unwrap();
        assert_eq!(store.faults_injected(), 2);
        assert_eq!(store.inner().len().unwrap(), 2);
    }

    #[test]
    fn a_fault_armed_past_the_last_call_never_fires() {
        let store = FailingStore::new(MemoryStore::new());
        store.fail_at(FailPoint::Apply(2));
        store.apply(batch("a", b"1")).unwrap();
        assert_eq!(store.faults_injected(), 0);
        assert_eq!(store.into_inner().len().unwrap(), 1);
    }
}
