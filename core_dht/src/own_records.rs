//! This device's own records: built, signed, kept in the device's store with the highest
//! `seq` used, and republished from there, so a restart never publishes a lower `seq` and a
//! record outlives the process that made it.
//!
//! Storage: namespace `dht_own` of the device's (sealed) store; `["seq", key]` holds the
//! highest seq used at a record key (8 bytes, big-endian), `["value", key]` the last value
//! published there. Both are written in one transaction *before* the value leaves the device.

use std::sync::Arc;

use core_identity::{DeviceIdentity, IdentityStore};
use core_mls::PublishableKeyPackage;

pub use crate::key_package_source::KeyPackageSource;
use libp2p::{Multiaddr, PeerId};
use spacepanda_core::{Clock, Key, SharedStore, Timestamp, Transaction};

use crate::config::DhtConfig;
use crate::directory::{Publication, PublishReport};
use crate::error::{DhtError, DhtResult, Rejection};
use crate::network::handle::DhtHandle;
use crate::records::{
    CLAIM_LIFETIME, KeyPackageRecord, Lifetime, RecordKey, RecordKind, UserBodyDevice, UserRecord,
    WireEntry, claim_body, encode_value, key_package_body, name_body, user_body,
};

/// Room a key package record needs besides its packages (credential, times, signature).
const RECORD_OVERHEAD: usize = 2048;

/// The device store namespace of this module.
pub const OWN_RECORDS_NAMESPACE: &str = "dht_own";

/// Builds, keeps and publishes the records of one device (and of its user).
pub struct DevicePublisher {
    store: SharedStore,
    identities: IdentityStore,
    device: DeviceIdentity,
    clock: Arc<dyn Clock>,
    config: DhtConfig,
}

impl std::fmt::Debug for DevicePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevicePublisher")
            .field("user", &self.device.user_id())
            .field("device", &self.device.device_id())
            .finish_non_exhaustive()
    }
}

/// What [`DevicePublisher::sync_claims`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSync {
    /// Claims found on this device's packages that it still offered (now marked claimed).
    pub newly_claimed: usize,
    /// The republished key package record, if anything changed.
    pub republished: Option<PublishReport>,
}

impl DevicePublisher {
    /// The publisher of `device`, whose identity and records live in `store`.
    pub fn new(
        store: SharedStore,
        clock: Arc<dyn Clock>,
        device: DeviceIdentity,
        config: &DhtConfig,
    ) -> Self {
        Self {
            identities: IdentityStore::new(store.clone(), clock.clone()),
            store,
            device,
            clock,
            config: config.clone(),
        }
    }

    /// The device this publisher speaks for.
    pub fn device(&self) -> &DeviceIdentity {
        &self.device
    }

    /// The user record: the devices `current` lists (the user's other devices, from a
    /// lookup), with this device (`peer_id`, `addresses`) in place of its own old entry,
    /// signed by the identity key, with a `seq` above both `current`'s and any this device
    /// used before.
    pub fn user_record(
        &self,
        current: Option<&UserRecord>,
        peer_id: PeerId,
        addresses: &[Multiaddr],
    ) -> DhtResult<Publication> {
        let user = self.device.user_id();
        let key = RecordKey::user(&user);
        let mut devices: Vec<UserBodyDevice> = Vec::new();
        if let Some(current) = current.filter(|c| c.user_id == user) {
            for other in &current.devices {
                if other.member.device_id() == self.device.device_id() {
                    continue;
                }
                devices.push(UserBodyDevice::new(
                    other.credential.clone(),
                    other.peer_id,
                    &other.addresses,
                ));
            }
        }
        devices.truncate(crate::records::MAX_DEVICES - 1);
        devices.push(UserBodyDevice::new(
            self.device.credential_bytes().to_vec(),
            peer_id,
            addresses,
        ));
        let floor = current.map_or(0, |c| c.seq);
        self.sign_and_keep(
            key,
            RecordKind::User,
            "user record",
            floor,
            |seq, lifetime| {
                let body = user_body(self.device.display_name(), devices, seq, lifetime);
                self.sign_as_user(RecordKind::User, &key, body)
            },
        )
    }

    /// The name and address index entries of this user.
    pub fn name_entries(&self) -> DhtResult<Vec<Publication>> {
        let name = self.device.display_name();
        let keys = [
            (RecordKey::name(name), RecordKind::Names, "name entry"),
            (
                RecordKey::address(name, &self.device.user_id().fingerprint()),
                RecordKind::Addresses,
                "address entry",
            ),
        ];
        keys.into_iter()
            .map(|(key, kind, what)| {
                self.sign_and_keep(key, kind, what, 0, |seq, lifetime| {
                    self.sign_as_user(kind, &key, name_body(name, seq, lifetime))
                })
            })
            .collect()
    }

    /// This device's key package record, with the last-resort package and the freshest of
    /// `packages` (from [`MlsClient::publishable_key_packages`](core_mls::MlsClient::publishable_key_packages); see
    /// [`DhtConfig::published_key_packages`]); it expires no later than the first of them.
    pub fn key_package_record(&self, packages: &[PublishableKeyPackage]) -> DhtResult<Publication> {
        let key = RecordKey::key_packages(&self.device.user_id(), &self.device.device_id());
        let chosen = self.choose(packages);
        let first_end = chosen.iter().map(|p| p.not_after).min();
        let bytes: Vec<Vec<u8>> = chosen.iter().map(|p| p.key_package.clone()).collect();
        self.sign_and_keep_until(
            key,
            RecordKind::KeyPackages,
            "key package record",
            0,
            first_end,
            |seq, lifetime| {
                let body = key_package_body(self.device.credential_bytes(), &bytes, seq, lifetime);
                Ok(self.sign_as_device(RecordKind::KeyPackages, &key, body))
            },
        )
    }

    /// The packages a record carries: the last-resort package, and the
    /// `published_key_packages` longest-lived fresh ones that fit the record's bounds.
    fn choose<'a>(&self, packages: &'a [PublishableKeyPackage]) -> Vec<&'a PublishableKeyPackage> {
        let mut chosen: Vec<&PublishableKeyPackage> = packages.iter().collect();
        chosen.sort_by_key(|p| (!p.last_resort, std::cmp::Reverse(p.not_after)));
        let fresh_allowed = self.config.published_key_packages;
        let mut fresh = 0;
        let mut size = 0;
        let budget = self.config.max_record_len.saturating_sub(RECORD_OVERHEAD);
        chosen.retain(|p| {
            if !p.last_resort {
                fresh += 1;
                if fresh > fresh_allowed {
                    return false;
                }
            }
            size += p.key_package.len() + 4;
            size <= budget
        });
        chosen.truncate(crate::records::MAX_KEY_PACKAGES);
        chosen
    }

    /// The refs of the key packages in the record this device last published (empty if it
    /// kept none, or the kept one is no longer valid).
    fn published_refs(&self) -> DhtResult<Vec<Vec<u8>>> {
        let key = RecordKey::key_packages(&self.device.user_id(), &self.device.device_id());
        let txn = Transaction::begin(&self.store);
        let Some(value) = txn.get(
            OWN_RECORDS_NAMESPACE,
            &Key::from_segment("value").with(key.as_bytes()),
        )?
        else {
            return Ok(Vec::new());
        };
        Ok(
            match crate::records::validate_value(&key, &value, &self.checks()) {
                Ok((crate::records::ValidValue::KeyPackages(record), _)) => record
                    .key_packages
                    .into_iter()
                    .map(|p| p.validated.key_package_ref)
                    .collect(),
                _ => Vec::new(),
            },
        )
    }

    /// A claim on `key_package_ref` of the device `record` belongs to: "this device used that
    /// package". Not kept (a claim is a hint; losing one costs its owner nothing but a
    /// package).
    pub fn claim(
        &self,
        record: &KeyPackageRecord,
        key_package_ref: &[u8],
    ) -> DhtResult<Publication> {
        let user = record.device.user_id();
        let device = record.device.device_id();
        let key = RecordKey::claims(&user, &device);
        let now = self.clock.now();
        let lifetime = Lifetime {
            issued_at: now,
            expires_at: now.saturating_add(CLAIM_LIFETIME),
        };
        let body = claim_body(
            &user,
            &device,
            key_package_ref,
            self.device.credential_bytes(),
            lifetime,
        );
        let entry = self.sign_as_device(RecordKind::Claims, &key, body);
        Ok(Publication {
            key,
            value: encode_value(RecordKind::Claims, vec![entry]),
            what: "claim".into(),
        })
    }

    /// The records this device published before, as kept in its store, that are still valid
    /// now (what to republish at start).
    pub fn stored(&self) -> DhtResult<Vec<Publication>> {
        let txn = Transaction::begin(&self.store);
        let checks = self.checks();
        let mut out = Vec::new();
        for (key, value) in txn.scan_prefix(OWN_RECORDS_NAMESPACE, &Key::from_segment("value"))? {
            let Some(record_key) = key
                .segments()
                .nth(1)
                .and_then(|s| <[u8; 32]>::try_from(s).ok())
                .map(RecordKey::from_bytes)
            else {
                continue;
            };
            if let Ok((valid, _)) = crate::records::validate_value(&record_key, &value, &checks) {
                out.push(Publication {
                    key: record_key,
                    what: format!("kept {:?} record", valid.kind()),
                    value,
                });
            }
        }
        Ok(out)
    }

    /// When the first kept record enters its republish margin (`None`: nothing kept).
    pub fn next_republish(&self) -> DhtResult<Option<Timestamp>> {
        let checks = self.checks();
        let mut next: Option<Timestamp> = None;
        for publication in self.stored()? {
            if let Ok((valid, _)) =
                crate::records::validate_value(&publication.key, &publication.value, &checks)
            {
                let due = valid
                    .expires_at()
                    .saturating_sub(self.config.republish_margin);
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        Ok(next)
    }

    /// Publishes the user record (merged with the devices the network lists), and the name
    /// and address entries. A user record nobody holds yet is not an error; an unreachable
    /// network is.
    pub async fn publish_identity(
        &self,
        dht: &DhtHandle,
        addresses: &[Multiaddr],
    ) -> DhtResult<PublishReport> {
        let current = match dht.lookup_user(&self.device.user_id()).await {
            Ok(record) => Some(record),
            Err(DhtError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let user = self.user_record(current.as_ref(), dht.peer_id(), addresses)?;
        let report = dht.publish(&user).await?;
        for entry in self.name_entries()? {
            dht.publish(&entry).await?;
        }
        Ok(report)
    }

    /// Publishes this device's key packages (after a start, a replenish, a rotation or a
    /// claim), and tells the engine they are published.
    pub async fn publish_key_packages(
        &self,
        dht: &DhtHandle,
        client: &mut impl KeyPackageSource,
    ) -> DhtResult<PublishReport> {
        let packages = client.publishable().await?;
        let record = self.key_package_record(&packages)?;
        let report = dht.publish(&record).await?;
        let refs: Vec<Vec<u8>> = self
            .choose(&packages)
            .iter()
            .map(|p| p.key_package_ref.clone())
            .collect();
        client.mark_published(refs).await?;
        Ok(report)
    }

    /// Tops the pool up and republishes the key package record if what it would carry differs
    /// from what was last published (a package claimed, consumed by a Welcome, rotated,
    /// expired or added). Returns the report if it published.
    pub async fn refresh_key_packages(
        &self,
        dht: &DhtHandle,
        client: &mut impl KeyPackageSource,
    ) -> DhtResult<Option<PublishReport>> {
        client.replenish().await?;
        let packages = client.publishable().await?;
        let mut offered: Vec<Vec<u8>> = self
            .choose(&packages)
            .iter()
            .map(|p| p.key_package_ref.clone())
            .collect();
        let mut published = self.published_refs()?;
        offered.sort();
        published.sort();
        if offered == published {
            return Ok(None);
        }
        self.publish_key_packages(dht, client).await.map(Some)
    }

    /// Looks for claims on this device's packages: the claimed ones stop being offered, the
    /// pool is replenished, and the record republished if what it offers changed (claimed
    /// here, or consumed by a Welcome since the last publish).
    pub async fn sync_claims(
        &self,
        dht: &DhtHandle,
        client: &mut impl KeyPackageSource,
    ) -> DhtResult<ClaimSync> {
        let claims = dht
            .lookup_claims(&self.device.user_id(), &self.device.device_id())
            .await?;
        let offered = client.publishable().await?;
        let claimed: Vec<Vec<u8>> = offered
            .iter()
            .filter(|p| !p.last_resort)
            .filter(|p| {
                claims
                    .iter()
                    .any(|c| c.key_package_ref == p.key_package_ref)
            })
            .map(|p| p.key_package_ref.clone())
            .collect();
        let newly_claimed = if claimed.is_empty() {
            0
        } else {
            client.mark_claimed(claimed).await?
        };
        let republished = self.refresh_key_packages(dht, client).await?;
        Ok(ClaimSync {
            newly_claimed,
            republished,
        })
    }

    /// Keeps this device's records fresh, what a driver calls at start and whenever
    /// [`next_republish`](Self::next_republish) comes: records within their republish margin
    /// (or gone) are rebuilt with a higher `seq` and a new lifetime, the key package record
    /// also when the pool changed, and the rest are republished as kept, so holders that
    /// joined since have them. Returns one result per publication.
    pub async fn keep_fresh(
        &self,
        dht: &DhtHandle,
        client: &mut impl KeyPackageSource,
        addresses: &[Multiaddr],
    ) -> DhtResult<Vec<(String, DhtResult<PublishReport>)>> {
        let now = self.clock.now();
        let checks = self.checks();
        let user = self.device.user_id();
        let identity_keys = [
            RecordKey::user(&user),
            RecordKey::name(self.device.display_name()),
            RecordKey::address(self.device.display_name(), &user.fingerprint()),
        ];
        let kp_key = RecordKey::key_packages(&user, &self.device.device_id());
        let mut fresh = Vec::new();
        let mut identity_due = false;
        let mut packages_due = false;
        let kept = self.stored()?;
        for key in identity_keys.iter().chain(std::iter::once(&kp_key)) {
            let kept_fresh = kept.iter().find(|p| p.key == *key).filter(|p| {
                crate::records::validate_value(&p.key, &p.value, &checks).is_ok_and(|(v, _)| {
                    v.expires_at().saturating_sub(self.config.republish_margin) > now
                })
            });
            // A user record that lists this device at another peer or other addresses (a new
            // node key, a new listen address) is rebuilt whatever its age.
            let kept_fresh = kept_fresh.filter(|p| {
                *key != identity_keys[0] || self.lists_this_device(p, dht.peer_id(), addresses)
            });
            match kept_fresh {
                Some(publication) => fresh.push(publication.clone()),
                None if *key == kp_key => packages_due = true,
                None => identity_due = true,
            }
        }
        let mut results = Vec::new();
        if identity_due {
            fresh.retain(|p| p.key == kp_key);
            results.push((
                "user record and names".to_owned(),
                self.publish_identity(dht, addresses).await,
            ));
        }
        if packages_due {
            results.push((
                "key package record".to_owned(),
                self.publish_key_packages(dht, client).await,
            ));
        } else {
            match self.refresh_key_packages(dht, client).await {
                Ok(Some(report)) => {
                    fresh.retain(|p| p.key != kp_key);
                    results.push(("key package record".to_owned(), Ok(report)));
                }
                Ok(None) => {}
                Err(e) => results.push(("key package record".to_owned(), Err(e))),
            }
        }
        let mut superseded = false;
        for publication in fresh {
            let result = dht.publish(&publication).await;
            // Another device of the user published a newer user record (or entry) since this
            // one was kept: build ours again on top of it.
            superseded |= publication.key != kp_key
                && matches!(
                    result,
                    Err(DhtError::InvalidRecord(Rejection::StaleSeq { .. }))
                );
            results.push((publication.what.clone(), result));
        }
        if superseded && !identity_due {
            results.push((
                "user record and names, on top of a newer one".to_owned(),
                self.publish_identity(dht, addresses).await,
            ));
        }
        Ok(results)
    }

    fn lists_this_device(
        &self,
        user_record: &Publication,
        peer_id: PeerId,
        addresses: &[Multiaddr],
    ) -> bool {
        let checks = self.checks();
        match crate::records::validate_value(&user_record.key, &user_record.value, &checks) {
            Ok((crate::records::ValidValue::User(record), _)) => record.devices.iter().any(|d| {
                d.member.device_id() == self.device.device_id()
                    && d.peer_id == peer_id
                    && addresses
                        .iter()
                        .take(crate::records::MAX_ADDRESSES_PER_DEVICE)
                        .eq(d.addresses.iter())
            }),
            _ => false,
        }
    }

    /// Republishes every kept record that is still valid, as it is. Returns one result per
    /// record.
    pub async fn republish(
        &self,
        dht: &DhtHandle,
    ) -> DhtResult<Vec<(String, DhtResult<PublishReport>)>> {
        let mut results = Vec::new();
        for publication in self.stored()? {
            results.push((publication.what.clone(), dht.publish(&publication).await));
        }
        Ok(results)
    }

    fn checks(&self) -> crate::records::Checks {
        crate::records::Checks::new(self.clock.now(), &self.config)
    }

    fn sign_as_user(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        body: Vec<u8>,
    ) -> DhtResult<WireEntry> {
        let identity_key = *self.device.identity_public_key().as_bytes();
        let mut failure = None;
        let entry = WireEntry::sign(kind, key, body, identity_key, |message| {
            self.identities.sign_as_user(message).unwrap_or_else(|e| {
                failure = Some(e);
                [0; 64]
            })
        });
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(entry),
        }
    }

    fn sign_as_device(&self, kind: RecordKind, key: &RecordKey, body: Vec<u8>) -> WireEntry {
        let keys = self.device.signature_key_pair();
        WireEntry::sign(kind, key, body, keys.public_key_bytes(), |message| {
            keys.sign(message)
        })
    }

    fn sign_and_keep(
        &self,
        key: RecordKey,
        kind: RecordKind,
        what: &str,
        floor: u64,
        sign: impl FnOnce(u64, Lifetime) -> DhtResult<WireEntry>,
    ) -> DhtResult<Publication> {
        self.sign_and_keep_until(key, kind, what, floor, None, sign)
    }

    /// Takes the next `seq` at `key` (above `floor` and every one used before), signs the
    /// record with it, and keeps both in one transaction before anything is published.
    fn sign_and_keep_until(
        &self,
        key: RecordKey,
        kind: RecordKind,
        what: &str,
        floor: u64,
        until: Option<Timestamp>,
        sign: impl FnOnce(u64, Lifetime) -> DhtResult<WireEntry>,
    ) -> DhtResult<Publication> {
        let mut txn = Transaction::begin(&self.store);
        let seq_key = Key::from_segment("seq").with(key.as_bytes());
        let used = match txn.get(OWN_RECORDS_NAMESPACE, &seq_key)? {
            Some(bytes) => {
                u64::from_be_bytes(<[u8; 8]>::try_from(bytes.as_slice()).map_err(|_| {
                    DhtError::CorruptedOwnRecord {
                        what: "highest seq",
                        reason: format!("{} bytes, not 8", bytes.len()),
                    }
                })?)
            }
            None => 0,
        };
        let seq = used.max(floor).saturating_add(1);
        let now = self.clock.now();
        let mut expires_at = now.saturating_add(self.config.record_lifetime);
        if let Some(until) = until {
            expires_at = expires_at.min(until);
        }
        let entry = sign(
            seq,
            Lifetime {
                issued_at: now,
                expires_at,
            },
        )?;
        let value = encode_value(kind, vec![entry]);
        txn.put(OWN_RECORDS_NAMESPACE, seq_key, seq.to_be_bytes().to_vec())?;
        txn.put(
            OWN_RECORDS_NAMESPACE,
            Key::from_segment("value").with(key.as_bytes()),
            value.clone(),
        )?;
        txn.commit()?;
        Ok(Publication {
            key,
            value,
            what: what.to_owned(),
        })
    }
}
