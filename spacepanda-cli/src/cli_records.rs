//! What the CLI keeps of its own, in the device's sealed store (namespace `cli`): the names
//! it knows groups by, and the bootstrap addresses to join through next time. Sealed and
//! crash-safe like the engine's records; one `apply` per change.

use core_dht::Multiaddr;
use core_mls::GroupId;
use spacepanda_core::{Key, SharedStore, WriteBatch};

use crate::error::CliError;

const NAMESPACE: &str = "cli";
const GROUP_NAME: &str = "group_name";
const BOOTSTRAP: &str = "bootstrap";

/// The CLI's records in one device's store.
#[derive(Clone)]
pub(crate) struct CliRecords {
    store: SharedStore,
}

impl CliRecords {
    pub(crate) fn new(store: SharedStore) -> Self {
        Self { store }
    }

    /// Every group name this device knows.
    pub(crate) fn group_names(&self) -> Result<Vec<(GroupId, String)>, CliError> {
        let entries = self
            .store
            .scan_prefix(NAMESPACE, &Key::from_segment(GROUP_NAME))?;
        Ok(entries
            .into_iter()
            .filter_map(|(key, value)| {
                let id = key.segments().nth(1)?;
                Some((GroupId::from_slice(id), String::from_utf8(value).ok()?))
            })
            .collect())
    }

    /// Names `group` (the creator's name, or the one a member announced).
    pub(crate) fn set_group_name(&self, group: &GroupId, name: &str) -> Result<(), CliError> {
        let mut batch = WriteBatch::new();
        batch.put(
            NAMESPACE,
            Key::from_segment(GROUP_NAME).with(group.as_slice()),
            name.as_bytes().to_vec(),
        );
        Ok(self.store.apply(batch)?)
    }

    /// The bootstrap addresses saved by the last `run` that had some.
    pub(crate) fn bootstrap(&self) -> Result<Vec<Multiaddr>, CliError> {
        let Some(bytes) = self.store.get(NAMESPACE, &Key::from_segment(BOOTSTRAP))? else {
            return Ok(Vec::new());
        };
        // One address per line; a line that no longer parses is skipped, not fatal.
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| line.parse().ok())
            .collect())
    }

    /// Saves the bootstrap addresses for next time.
    pub(crate) fn set_bootstrap(&self, addresses: &[Multiaddr]) -> Result<(), CliError> {
        let lines: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        let mut batch = WriteBatch::new();
        batch.put(
            NAMESPACE,
            Key::from_segment(BOOTSTRAP),
            lines.join("\n").into_bytes(),
        );
        Ok(self.store.apply(batch)?)
    }
}
