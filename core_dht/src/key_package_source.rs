//! [`KeyPackageSource`]: the engine as the publisher of a device's records sees it.

use core_mls::{MlsClient, PublishableKeyPackage};

use crate::error::DhtResult;

/// What publishing needs from the device's engine: four short calls, each one engine
/// operation. [`MlsClient`] is one; the [`Node`](crate::Node) passes one that runs each call on
/// a blocking thread, so the engine is free while records travel.
// The futures' auto traits follow the implementing type (ours are `Send`); nothing here needs
// to name them.
#[allow(async_fn_in_trait)]
pub trait KeyPackageSource {
    /// [`MlsClient::publishable_key_packages`].
    async fn publishable(&mut self) -> DhtResult<Vec<PublishableKeyPackage>>;
    /// [`MlsClient::replenish_key_packages`].
    async fn replenish(&mut self) -> DhtResult<usize>;
    /// [`MlsClient::mark_key_packages_published`].
    async fn mark_published(&mut self, refs: Vec<Vec<u8>>) -> DhtResult<usize>;
    /// [`MlsClient::mark_key_packages_claimed`].
    async fn mark_claimed(&mut self, refs: Vec<Vec<u8>>) -> DhtResult<usize>;
}

impl KeyPackageSource for MlsClient {
    async fn publishable(&mut self) -> DhtResult<Vec<PublishableKeyPackage>> {
        Ok(self.publishable_key_packages()?)
    }

    async fn replenish(&mut self) -> DhtResult<usize> {
        Ok(self.replenish_key_packages()?)
    }

    async fn mark_published(&mut self, refs: Vec<Vec<u8>>) -> DhtResult<usize> {
        Ok(self.mark_key_packages_published(&refs)?)
    }

    async fn mark_claimed(&mut self, refs: Vec<Vec<u8>>) -> DhtResult<usize> {
        Ok(self.mark_key_packages_claimed(&refs)?)
    }
}
