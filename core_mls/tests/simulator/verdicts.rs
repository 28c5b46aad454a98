//! Judging what the engine returns: which errors are expected in a network that delays,
//! duplicates, reorders and forks, which are failures; a tally of everything; the failure type.
//!
//! The rules (see also the crate docs):
//! - errors from handling an envelope: any error whose `kind()` is not `PeerInput` is a
//!   failure. Of the peer-input ones, `NoLongerMember` (the device was removed, or a message
//!   reached it after its removal), `StaleEpoch` (a handshake for an epoch the device already
//!   left: a lost commit race or a proposal overtaken by a commit), `OtherBranch`,
//!   `AlreadyJoined` (a second Welcome for the group, e.g. two concurrent adds),
//!   `NoMatchingKeyPackage` (a Welcome for a key package already used) and `TooManyProposals`
//!   are accepted and counted. `RejectedMessage` is judged at the end of the run, once the
//!   winning branch (founder 0's history) is known (`checks`): it is accepted when the
//!   receiver is not on the winning branch at the end, did not hold the group, was on another
//!   branch when it refused the message, or joined again after the message's epoch, or when
//!   the message was made on another branch; anything else is a message lost on the winning
//!   branch (`message older than max_past_epochs` when its epoch's secrets were gone by then)
//!   and a failure. An accepted rejection can still be a loss the design does not allow (a
//!   member of the winning branch refusing a message while it was briefly on a losing one):
//!   the exactly-once checks catch that. `InvalidWelcome` is accepted only when the device already holds the group
//!   (OpenMLS refuses to stage a Welcome for a group in storage before the engine's own
//!   `AlreadyJoined` check runs: the same case, reported with the wrong variant); what such a
//!   Welcome should have done is checked by the convergence check at the end.
//!   Every other error (`ForkOutsideWindow`, `Internal`, `Storage`, `CorruptedState`,
//!   `UnverifiedMember`, `InvalidWelcome`, malformed input, …) is a failure: the simulator
//!   only sends bytes the engine produced. A `ForkOutsideWindow` for a commit of an epoch
//!   before the device's last join has its own class, to tell it from a window too small.
//! - errors from an operation the app starts: `AlreadyMember`, `NotAMember`, `UnknownGroup`,
//!   `InvalidArgument` mean the actor's view was stale and are counted; anything else fails.

use std::collections::BTreeMap;
use std::fmt;

use core_mls::{ErrorKind, MlsError};

/// Why a run failed. `class` groups failures for shrinking (a smaller run must fail with the
/// same class) and for the summary; `detail` says what exactly went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) class: String,
    pub(crate) detail: String,
}

impl Failure {
    pub(crate) fn new(class: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            class: class.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.class, self.detail)
    }
}

/// The name of an enum variant, from its `Debug` output (`MlsError` is `#[non_exhaustive]`,
/// and events and errors are reported by name).
pub(crate) fn variant_name(value: &impl fmt::Debug) -> String {
    let text = format!("{value:?}");
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// What to make of an error from `handle_envelope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnvelopeVerdict {
    /// Expected in this network; the reason is part of the tally.
    Accepted(&'static str),
    /// `RejectedMessage`: judged at the end, against the winning branch.
    Judged,
    /// A failure.
    Fatal,
}

pub(crate) fn judge_envelope_error(error: &MlsError) -> EnvelopeVerdict {
    // The engine blames an envelope's error on the envelope, or it is a failure whatever the
    // variant: the simulator only sends bytes the engine produced.
    if error.kind() != ErrorKind::PeerInput {
        return EnvelopeVerdict::Fatal;
    }
    match error {
        MlsError::NoLongerMember { .. } => EnvelopeVerdict::Accepted("to a removed device"),
        MlsError::StaleEpoch { .. } => EnvelopeVerdict::Accepted("handshake of a past epoch"),
        MlsError::OtherBranch { .. } => EnvelopeVerdict::Accepted("from another branch"),
        MlsError::AlreadyJoined { .. } => EnvelopeVerdict::Accepted("Welcome for a held group"),
        MlsError::NoMatchingKeyPackage { .. } => {
            EnvelopeVerdict::Accepted("Welcome for a used key package")
        }
        MlsError::TooManyProposals { .. } => EnvelopeVerdict::Accepted("proposal flood limit"),
        // A device far behind: what it cannot hold is refused, as junk would be; whether that
        // keeps it from converging is judged at the end.
        MlsError::BufferFull { .. } => EnvelopeVerdict::Accepted("buffer full"),
        MlsError::RejectedMessage { .. } => EnvelopeVerdict::Judged,
        _ => EnvelopeVerdict::Fatal,
    }
}

/// An error from an operation that only means the actor's view of the group was stale.
pub(crate) fn is_stale_view(error: &MlsError) -> bool {
    matches!(
        error,
        MlsError::AlreadyMember { .. }
            | MlsError::NotAMember { .. }
            | MlsError::UnknownGroup { .. }
            | MlsError::InvalidArgument { .. }
    )
}

/// Counts of everything that happened, by kind, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally(BTreeMap<String, u64>);

impl Tally {
    pub(crate) fn add(&mut self, key: impl Into<String>) {
        self.add_n(key, 1);
    }

    pub(crate) fn add_n(&mut self, key: impl Into<String>, n: u64) {
        *self.0.entry(key.into()).or_insert(0) += n;
    }

    pub(crate) fn merge(&mut self, other: &Tally) {
        for (key, n) in &other.0 {
            self.add_n(key.clone(), *n);
        }
    }

    pub(crate) fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, n) in &self.0 {
            writeln!(f, "  {n:>8}  {key}")?;
        }
        Ok(())
    }
}
