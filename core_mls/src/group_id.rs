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
