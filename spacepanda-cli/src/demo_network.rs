//! An in-process stand-in for the network: envelopes addressed to devices, delivered in a
//! shuffled order with duplicates, held for devices that are offline.

use std::collections::{BTreeMap, BTreeSet};

use core_mls::{DeviceAddress, Outbound};
use rand::Rng;
use rand::seq::SliceRandom;

/// Envelopes in flight, per destination device.
#[derive(Debug, Default)]
pub(crate) struct DemoNetwork {
    in_flight: BTreeMap<DeviceAddress, Vec<Vec<u8>>>,
    pub(crate) delivered: usize,
    pub(crate) duplicated: usize,
}

impl DemoNetwork {
    /// Accepts what a device produced (after it is durably in that device's outbox).
    pub(crate) fn submit(&mut self, outbound: &[Outbound]) {
        for entry in outbound {
            let bytes = entry.envelope.to_bytes();
            for device in &entry.to.devices {
                self.in_flight
                    .entry(*device)
                    .or_default()
                    .push(bytes.clone());
            }
        }
    }

    /// Takes every envelope for the online devices, shuffled, with about a quarter of them
    /// duplicated. Envelopes for offline devices stay queued.
    pub(crate) fn drain(
        &mut self,
        online: &BTreeSet<DeviceAddress>,
        rng: &mut impl Rng,
    ) -> Vec<(DeviceAddress, Vec<u8>)> {
        let mut batch = Vec::new();
        for device in online {
            if let Some(queue) = self.in_flight.remove(device) {
                for bytes in queue {
                    if rng.gen_bool(0.25) {
                        batch.push((*device, bytes.clone()));
                        self.duplicated += 1;
                    }
                    batch.push((*device, bytes));
                }
            }
        }
        batch.shuffle(rng);
        self.delivered += batch.len();
        batch
    }

    /// Envelopes waiting for `device`.
    pub(crate) fn queued_for(&self, device: &DeviceAddress) -> usize {
        self.in_flight.get(device).map_or(0, Vec::len)
    }
}
