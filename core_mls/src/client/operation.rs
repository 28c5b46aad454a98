//! One public operation, one transaction: [`MlsClient::transaction`].
//!
//! Every public operation of the engine that changes anything runs inside one storage
//! transaction, with everything it sets off: the commit a send makes first when proposals are
//! pending, the messages a commit makes processable (replayed from the epoch buffer), the own
//! commits a rollback re-issues, the deferred sends a commit releases. It commits once, or not
//! at all.
//!
//! Some of those are *steps* that may fail on their own without failing the operation: a
//! buffered message that turns out to be invalid is dropped, a competing commit that loses is
//! rolled back, a queued re-issue that no longer applies is skipped. A step runs from a
//! savepoint of the open transaction ([`spacepanda_core::Savepoint`]); its failure rolls back
//! to it. Only a failure that condemns the input (not [`MlsError::is_local`]) may be dropped
//! this way; a local one (storage, a bug) fails the whole operation, and what it was working
//! on — the buffered message, the re-issue — is still there for the retry.
//!
//! Memory follows storage: every group whose in-memory `MlsGroup` an operation (or step) may
//! have changed is *touched*, and reloaded — from the store, or from the open transaction for
//! a step — when it is rolled back.
//!
//! Invariant: nothing writes to the store except [`MlsClient::transaction`]'s single commit
//! of an operation that succeeded and met no storage failure on the way.

use std::collections::BTreeSet;

use openmls::prelude::OpenMlsProvider as _;

use crate::client::MlsClient;
use crate::error::MlsError;
use crate::group_id::GroupId;

/// What an operation in progress touched, kept by the client between its steps.
#[derive(Debug, Default)]
pub(crate) struct Bookkeeping {
    /// Groups whose in-memory state the open transaction may have changed: reloaded if it, or
    /// a step of it, is rolled back.
    touched: BTreeSet<GroupId>,
    /// A reload after a rollback failed (the store is failing): memory may differ from storage
    /// until every group is reloaded, which the next operation does before anything else.
    stale: bool,
}

impl MlsClient {
    /// Runs `op` as one storage transaction: on success every write (OpenMLS's and ours) is
    /// committed atomically and durably; on error nothing is written and every group the
    /// operation touched is reloaded from storage, so memory and disk never disagree. A panic
    /// inside `op` rolls back too, and reloads every group before it continues unwinding, so the
    /// engine stays usable.
    ///
    /// Called while a transaction is open — one step of a larger operation, such as a buffered
    /// message replayed after a commit, or the commit a send makes first — it does not commit:
    /// `op` runs from a savepoint of the open transaction, and an error rolls back to it (and
    /// reloads the touched groups from what the transaction holds), so the caller can drop a
    /// step that failed on bad input and go on. The whole public operation still commits once.
    ///
    /// A storage failure anywhere in the transaction fails it, even if the code that met it (in
    /// OpenMLS, which turns some storage errors into its own refusals, or in a step that was
    /// dropped) went on: what it wrote may rest on a read that never happened.
    pub(crate) fn transaction<R>(
        &mut self,
        group: Option<&GroupId>,
        op: impl FnOnce(&mut Self) -> Result<R, MlsError>,
    ) -> Result<R, MlsError> {
        if let Some(group) = group {
            self.operation.touched.insert(group.clone());
        }
        if self.provider.storage().in_transaction() {
            return self.step(op);
        }
        if self.operation.stale {
            self.reload_all_groups()?;
            self.operation.stale = false;
        }
        self.operation.touched.clear();
        if let Some(group) = group {
            self.operation.touched.insert(group.clone());
        }
        self.provider.storage().begin()?;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(self)));
        let result = match outcome {
            Ok(Ok(value)) => match self.provider.storage().take_failure() {
                Some(failure) => Err(swallowed_failure(failure)),
                None => self.provider.storage().commit().map(|()| value),
            },
            Ok(Err(error)) => Err(self.attribute(error)),
            Err(panic) => {
                self.provider.storage().rollback();
                self.operation.touched.clear();
                // Whatever the operation changed in memory is gone with the rollback.
                if self.reload_all_groups().is_err() {
                    self.operation.stale = true;
                }
                std::panic::resume_unwind(panic);
            }
        };
        if result.is_err() {
            self.provider.storage().rollback();
            self.provider.storage().take_failure();
            self.reload_touched();
        }
        self.operation.touched.clear();
        result
    }

    /// One step inside the open transaction (see [`transaction`](Self::transaction)).
    fn step<R>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<R, MlsError>,
    ) -> Result<R, MlsError> {
        let savepoint = self.provider.storage().savepoint()?;
        match op(self) {
            Ok(value) => {
                self.provider.storage().release(savepoint)?;
                Ok(value)
            }
            Err(error) => {
                let error = self.attribute(error);
                self.rollback_step(savepoint)?;
                Err(error)
            }
        }
    }

    /// Inside the open transaction: forgets what it wrote since `savepoint` and puts every
    /// touched group back to what the transaction holds.
    pub(crate) fn rollback_step(
        &mut self,
        savepoint: spacepanda_core::Savepoint,
    ) -> Result<(), MlsError> {
        self.provider.storage().rollback_to(savepoint)?;
        for group in self.operation.touched.clone() {
            self.reload_group(&group)?;
        }
        Ok(())
    }

    /// Marks a savepoint of the open transaction (see `rollback_step`).
    pub(crate) fn savepoint(&self) -> Result<spacepanda_core::Savepoint, MlsError> {
        self.provider.storage().savepoint()
    }

    /// Keeps what the open transaction wrote since `savepoint`.
    pub(crate) fn release_step(
        &self,
        savepoint: spacepanda_core::Savepoint,
    ) -> Result<(), MlsError> {
        self.provider.storage().release(savepoint)
    }

    /// `error`, or the storage failure behind it: OpenMLS reports a failing store as its own
    /// refusal (a "rejected" message, an "invalid" commit), which must not be taken for bad
    /// input and dropped.
    pub(crate) fn attribute(&self, error: MlsError) -> MlsError {
        match self.provider.storage().failure() {
            Some(failure) if error.kind() != crate::error::ErrorKind::LocalStorage => {
                swallowed_failure(failure)
            }
            _ => error,
        }
    }

    /// After a rollback: every touched group as storage holds it. If a reload fails too, the
    /// group is dropped from memory and the next operation reloads everything first.
    fn reload_touched(&mut self) {
        for group in std::mem::take(&mut self.operation.touched) {
            if self.reload_group(&group).is_err() {
                self.groups.remove(&group);
                self.rosters.remove(&group);
                self.operation.stale = true;
            }
        }
    }

    /// Notes that `group`'s in-memory state is about to change inside the open transaction.
    pub(crate) fn touch(&mut self, group: &GroupId) {
        if self.provider.storage().in_transaction() {
            self.operation.touched.insert(group.clone());
        }
    }
}

/// The error for a storage failure that the code meeting it did not report as one (OpenMLS
/// wraps ours in its own errors, some without a source).
pub(crate) fn swallowed_failure(failure: String) -> MlsError {
    MlsError::Storage(spacepanda_core::StoreError::Backend {
        backend: "store",
        operation: "a read or write inside the operation",
        source: failure.into(),
    })
}
