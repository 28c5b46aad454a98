//! placeholder
mod config;
mod directory;
mod error;
mod network;
mod own_records;
pub mod records;
pub use config::*;
pub use directory::{Publication, PublishReport, ResolvedRecord};
pub use error::*;
pub use network::event_loop::NodeStatus;
pub use network::handle::DhtHandle;
pub use own_records::{ClaimSync, DevicePublisher, OWN_RECORDS_NAMESPACE};
pub use records::{
    Claim, DeviceRecord, KeyPackageRecord, NameEntry, PublishedKeyPackage, UserRecord,
};
