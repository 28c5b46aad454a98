//! What the fault-injection test compares: everything an application can observe of a client
//! ([`View`]), and the shape of an operation's output.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, unreachable_pub)]

use core_mls::{
    DeviceAddress, Envelope, EnvelopeKind, Event, ForkReport, GroupId, MlsClient, Output,
    PoolStatus,
};

/// Everything an application can observe of a client without changing it.
#[derive(Debug, PartialEq)]
pub struct View {
    pub groups: Vec<GroupView>,
    pub outbound: Vec<(u64, Vec<u8>, Vec<DeviceAddress>)>,
    pub delivered: Vec<Event>,
    pub key_packages: PoolStatus,
    pub publishable: Vec<Vec<u8>>,
}

impl View {
    /// What differs from `other`, in short (group epochs, the names of other fields).
    pub fn differences(&self, other: &Self) -> String {
        let epochs = |v: &Self| -> Vec<(String, u64)> {
            v.groups
                .iter()
                .map(|g| (g.id.to_string(), g.epoch))
                .collect()
        };
        let mut found = Vec::new();
        if self.groups != other.groups {
            found.push(format!("groups {:?} vs {:?}", epochs(self), epochs(other)));
        }
        for (name, differs) in [
            ("outbound", self.outbound != other.outbound),
            ("delivered", self.delivered != other.delivered),
            ("key packages", self.key_packages != other.key_packages),
            ("publishable", self.publishable != other.publishable),
        ] {
            if differs {
                found.push(name.to_owned());
            }
        }
        found.join(", ")
    }

    /// Equal to `reference`, except that groups may be missing.
    pub fn within(&self, reference: &Self) -> bool {
        self.groups.iter().all(|g| reference.groups.contains(g))
            && self.outbound == reference.outbound
            && self.delivered == reference.delivered
            && self.key_packages == reference.key_packages
            && self.publishable == reference.publishable
    }
}

#[derive(Debug, PartialEq)]
pub struct GroupView {
    pub id: GroupId,
    pub epoch: u64,
    pub authenticator: Vec<u8>,
    pub members: Vec<DeviceAddress>,
    pub fork: ForkReport,
    pub deferred: usize,
}

pub fn observe(client: &mut MlsClient) -> View {
    let mut groups = Vec::new();
    for id in client.groups() {
        let mut members: Vec<DeviceAddress> = client
            .members(&id)
            .unwrap()
            .iter()
            .map(DeviceAddress::from)
            .collect();
        members.sort();
        groups.push(GroupView {
            epoch: client.epoch(&id).unwrap(),
            authenticator: client.epoch_authenticator(&id).unwrap(),
            members,
            fork: client.fork_report(&id).unwrap(),
            deferred: client.pending_deferred_sends(&id).unwrap(),
            id,
        });
    }
    View {
        groups,
        outbound: client
            .pending_outbound()
            .unwrap()
            .into_iter()
            .map(|o| (o.id.0, o.envelope.to_bytes(), o.to.devices))
            .collect(),
        delivered: client.pending_delivered().unwrap(),
        key_packages: client.key_package_status().unwrap(),
        publishable: client
            .publishable_key_packages()
            .unwrap()
            .into_iter()
            .map(|p| p.key_package_ref)
            .collect(),
    }
}

/// The event variant names and outbound kinds of an output: what any run of one operation from
/// one state produces, whatever its random draws.
pub fn shape(output: &Output) -> String {
    let events: Vec<String> = output
        .events
        .iter()
        .map(|e| {
            format!("{e:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let outbound: Vec<String> = output
        .outbound
        .iter()
        .map(|o| format!("{:?}x{}", o.envelope.kind(), o.to.devices.len()))
        .collect();
    format!("{:?} {events:?} {outbound:?}", output.disposition)
}

pub fn kinds(output: &Output) -> Vec<EnvelopeKind> {
    output.outbound.iter().map(|o| o.envelope.kind()).collect()
}

/// The bytes of the only outbound envelope of `kind` in `output`.
pub fn envelope(output: &Output, kind: EnvelopeKind) -> Vec<u8> {
    let found: Vec<&Envelope> = output
        .outbound
        .iter()
        .map(|o| &o.envelope)
        .filter(|e| e.kind() == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind:?} in {}", shape(output));
    found[0].to_bytes()
}

pub fn has_event(output: &Output, wanted: impl Fn(&Event) -> bool) -> bool {
    output.events.iter().any(wanted)
}
