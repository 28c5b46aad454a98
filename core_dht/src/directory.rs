//! The directory over the network: publishing a record (with a check that peers really hold
//! it), looking records up (every answer validated, the best kept), and resolving what people
//! type to users.

use core_identity::{Address, DeviceId, Directory, DisplayName, IdentityError, UserId};
use futures::future::join_all;
use libp2p::PeerId;

use crate::error::{DhtError, DhtResult};
use crate::network::event_loop::GetOutcome;
use crate::network::handle::DhtHandle;
use crate::records::{Claim, KeyPackageRecord, NameEntry, RecordKey, UserRecord, ValidValue};

/// A record ready to publish: its key, its signed value, and what it is (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub(crate) key: RecordKey,
    pub(crate) value: Vec<u8>,
    pub(crate) what: String,
}

impl Publication {
    /// Where it goes.
    pub fn key(&self) -> RecordKey {
        self.key
    }

    /// What it is, in words ("user record", "name entry", …).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The signed value as it travels.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// A publication of bytes built elsewhere (a tool, a test, a value kept by hand). It is
    /// checked like any other: a forged one is refused by this node before it leaves.
    pub fn from_raw_parts(key: [u8; 32], value: Vec<u8>) -> Self {
        Self {
            key: RecordKey::from_bytes(key),
            value,
            what: "record".into(),
        }
    }
}

/// How a publication went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishReport {
    /// The closest peers it was sent to.
    pub asked: usize,
    /// Those that acknowledged the put. An acknowledgement is not proof of storage: kad acks
    /// even when the receiver discards the record.
    pub acked: usize,
    /// Peers that returned it on a lookup right after: the replicas known to hold it.
    pub confirmed: usize,
}

/// A user found by name or address, with the records that prove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRecord {
    /// The user's record: identity key, name, devices.
    pub user: UserRecord,
}

impl DhtHandle {
    /// Publishes `publication`: stores it here, sends it to the closest peers, then looks it up
    /// to count the peers that really hold it. Fewer than the quorum
    /// ([`DhtConfig::publish_quorum`](crate::DhtConfig::publish_quorum), at most the peers
    /// asked) is [`DhtError::QuorumNotReached`] with the counts.
    pub async fn publish(&self, publication: &Publication) -> DhtResult<PublishReport> {
        let put = self.put(publication.key, publication.value.clone()).await?;
        let check = self.get(publication.key).await?;
        let ours = crate::records::validate_value(
            &publication.key,
            &publication.value,
            &self.checks_now(),
        )
        .map(|(value, _)| value)
        .map_err(DhtError::from)?;
        let confirmed = count_holders(&check, &ours);
        let needed = self.config().publish_quorum.min(put.asked).max(1);
        if confirmed < needed {
            return Err(DhtError::QuorumNotReached {
                what: publication.what.clone(),
                confirmed,
                acked: put.acked,
                asked: put.asked,
                needed,
            });
        }
        Ok(PublishReport {
            asked: put.asked,
            acked: put.acked,
            confirmed,
        })
    }

    /// The user record of `user`.
    pub async fn lookup_user(&self, user: &UserId) -> DhtResult<UserRecord> {
        match self.lookup(RecordKey::user(user), "user record").await? {
            ValidValue::User(record) => Ok(record),
            _ => Err(wrong_kind("user record")),
        }
    }

    /// The key package record of one device.
    pub async fn lookup_key_packages(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> DhtResult<KeyPackageRecord> {
        match self
            .lookup(RecordKey::key_packages(user, device), "key package record")
            .await?
        {
            ValidValue::KeyPackages(record) => Ok(record),
            _ => Err(wrong_kind("key package record")),
        }
    }

    /// The claims on one device's key packages (none is an empty list, not an error; an
    /// unreachable network is).
    pub async fn lookup_claims(&self, user: &UserId, device: &DeviceId) -> DhtResult<Vec<Claim>> {
        match self.lookup(RecordKey::claims(user, device), "claims").await {
            Ok(ValidValue::Claims(claims)) => Ok(claims),
            Ok(_) => Err(wrong_kind("claims")),
            Err(DhtError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The users listed under a display name.
    pub async fn lookup_name(&self, name: &DisplayName) -> DhtResult<Vec<NameEntry>> {
        match self.lookup(RecordKey::name(name), "name").await? {
            ValidValue::Names(entries) => Ok(entries),
            _ => Err(wrong_kind("name")),
        }
    }

    /// The users listed under an address (`name@fingerprint`).
    pub async fn lookup_address(&self, address: &Address) -> DhtResult<Vec<NameEntry>> {
        let key = RecordKey::address(address.name(), &address.fingerprint());
        match self.lookup(key, "address").await? {
            ValidValue::Addresses(entries) => Ok(entries),
            _ => Err(wrong_kind("address")),
        }
    }

    /// Resolves what a person typed (`alice@1a2b3c4d` or `alice`) over the network, with
    /// core_identity's rule: exactly one user, or an error that lists the candidates
    /// ([`IdentityError::AmbiguousAddress`], [`IdentityError::UnknownAddress`]). Every
    /// candidate is checked against its own signed user record.
    pub async fn resolve(&self, query: &str) -> DhtResult<ResolvedRecord> {
        let entries = if query.contains('@') {
            let address: Address = query.parse()?;
            self.lookup_address(&address).await?
        } else {
            let name = DisplayName::new(query)?;
            self.lookup_name(&name).await?
        };
        let lookups = entries.iter().map(|entry| self.lookup_user(&entry.user_id));
        let users: Vec<UserRecord> = join_all(lookups)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        let mut directory = Directory::new();
        for user in &users {
            for device in &user.devices {
                directory.insert(device.member.clone());
            }
        }
        let resolved = directory.resolve(query).map_err(|e| match e {
            IdentityError::UnknownAddress { .. } if users.is_empty() => DhtError::NotFound {
                what: format!("user record for {query}"),
                reached: entries.len(),
                rejected: 0,
            },
            e => DhtError::Identity(e),
        })?;
        users
            .into_iter()
            .find(|u| u.user_id == resolved.user_id())
            .map(|user| ResolvedRecord { user })
            .ok_or_else(|| wrong_kind("user record"))
    }

    /// Looks `key` up and combines every valid answer (the highest `seq`, or the merge of
    /// every list).
    async fn lookup(&self, key: RecordKey, what: &str) -> DhtResult<ValidValue> {
        let outcome = self.get(key).await?;
        let mut values = outcome.found.into_iter().map(|(_, value)| value);
        match values.next() {
            Some(first) => Ok(values.fold(first, |acc, next| acc.merged_with(Some(next)))),
            None if outcome.reached == 0 => Err(DhtError::Unreachable {
                reason: if outcome.timed_out {
                    format!("no peer answered the {what} lookup in time")
                } else {
                    "this node knows no peers".into()
                },
            }),
            None => Err(DhtError::NotFound {
                what: what.to_owned(),
                reached: outcome.reached,
                rejected: outcome.rejected,
            }),
        }
    }

    pub(crate) fn checks_now(&self) -> crate::records::Checks {
        crate::records::Checks::new(self.clock().now(), self.config())
    }
}

/// How many peers (not this node) returned a value holding `ours` (or a newer version of it).
fn count_holders(outcome: &GetOutcome, ours: &ValidValue) -> usize {
    let mut peers: Vec<PeerId> = outcome
        .found
        .iter()
        .filter_map(|(peer, value)| peer.filter(|_| value.covers(ours)))
        .collect();
    peers.sort();
    peers.dedup();
    peers.len()
}

fn wrong_kind(what: &str) -> DhtError {
    DhtError::NotFound {
        what: format!("{what} (a record of another kind sits at its key)"),
        reached: 0,
        rejected: 1,
    }
}
