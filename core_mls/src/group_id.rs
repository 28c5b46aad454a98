//! Group identifiers as this crate's API shows them.

use std::fmt;

/// A group id: 32 random bytes chosen by the creator (any length is accepted from OpenMLS).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(Vec<u8>);

impl GroupId {
    /// From raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// The raw bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn to_openmls(&self) -> openmls::prelude::GroupId {
        openmls::prelude::GroupId::from_slice(&self.0)
    }

    pub(crate) fn from_openmls(id: &openmls::prelude::GroupId) -> Self {
        Self(id.as_slice().to_vec())
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight bytes tell groups apart in logs and UIs.
        for byte in self.0.iter().take(8) {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({self})")
    }
}

/// Every group with at least one entry in `namespace`, each once, in order: for our records
/// whose keys start with the group id (sealed stores scan in no particular order).
pub(crate) fn groups_with_entries(
    txn: &spacepanda_core::Transaction,
    namespace: &str,
) -> Result<Vec<GroupId>, crate::error::MlsError> {
    let mut groups: Vec<GroupId> = txn
        .scan_prefix(namespace, &spacepanda_core::Key::empty())?
        .into_iter()
        .filter_map(|(key, _)| key.segments().next().map(GroupId::from_slice))
        .collect();
    groups.sort();
    groups.dedup();
    Ok(groups)
}
