//! The durable outbox: every envelope an operation produces is written here in the same
//! transaction as the state change, and stays until the network layer acknowledges it.

use spacepanda_core::{Key, Transaction};
use tls_codec::{
    Deserialize as _, Serialize as _, TlsByteVecU8, TlsByteVecU32, TlsDeserialize, TlsSerialize,
    TlsSize, TlsVecU32,
};

use crate::envelope::Envelope;
use crate::error::MlsError;
use crate::events::{DeviceAddress, Outbound, OutboxId, Recipients};
use crate::group_id::GroupId;

/// Namespace of outbox entries, keyed by big-endian sequence number (so scans are in order).
pub(crate) const OUTBOX_NAMESPACE: &str = "outbox";
/// Namespace of the engine's counters.
pub(crate) const COUNTER_NAMESPACE: &str = "engine_counters";
const RECORD_VERSION: u8 = 1;

#[derive(TlsSerialize, TlsDeserialize, TlsSize)]
struct DeviceWire {
    user_id: [u8; 32],
    device_id: [u8; 16],
}

#[derive(TlsSerialize, TlsDeserialize, TlsSize)]
struct OutboxRecordWire {
    version: u8,
    has_group: u8,
    group: TlsByteVecU8,
    devices: TlsVecU32<DeviceWire>,
    envelope: TlsByteVecU32,
}

fn entry_key(id: OutboxId) -> Key {
    Key::from_segment(id.0.to_be_bytes())
}

/// Draws the next number (from 1) of the sequence `name` inside `txn`: outbox entries, inbox
/// deliveries and deferred sends are keyed by such numbers so scans come back in order.
pub(crate) fn next_sequence(txn: &mut Transaction, name: &'static str) -> Result<u64, MlsError> {
    let key = Key::from_segment(name);
    let next = match txn.get(COUNTER_NAMESPACE, &key)? {
        Some(bytes) => u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
            MlsError::CorruptedState {
                namespace: COUNTER_NAMESPACE,
                reason: "sequence counter is not 8 bytes",
            }
        })?),
        None => 1,
    };
    txn.put(COUNTER_NAMESPACE, key, (next + 1).to_be_bytes().to_vec())?;
    Ok(next)
}

/// Appends `envelope` for `to` to the outbox inside `txn` and returns the entry.
pub(crate) fn push(
    txn: &mut Transaction,
    to: Recipients,
    envelope: Envelope,
) -> Result<Outbound, MlsError> {
    let next = next_sequence(txn, "outbox_sequence")?;
    let id = OutboxId(next);
    let record = OutboxRecordWire {
        version: RECORD_VERSION,
        has_group: u8::from(to.group.is_some()),
        group: to
            .group
            .as_ref()
            .map(|g| g.as_slice().to_vec())
            .unwrap_or_default()
            .into(),
        devices: to
            .devices
            .iter()
            .map(|d| DeviceWire {
                user_id: *d.user_id.as_bytes(),
                device_id: *d.device_id.as_bytes(),
            })
            .collect::<Vec<_>>()
            .into(),
        envelope: envelope.to_bytes().into(),
    }
    .tls_serialize_detached()
    .map_err(|_| MlsError::Internal {
        what: "outbox record does not encode",
    })?;
    txn.put(OUTBOX_NAMESPACE, entry_key(id), record)?;
    Ok(Outbound { id, to, envelope })
}

/// Removes an acknowledged entry. Acknowledging twice (or an unknown id) is not an error:
/// the network layer may retry acknowledgements after a crash too.
pub(crate) fn ack(txn: &mut Transaction, id: OutboxId) -> Result<bool, MlsError> {
    let key = entry_key(id);
    let present = txn.get(OUTBOX_NAMESPACE, &key)?.is_some();
    if present {
        txn.delete(OUTBOX_NAMESPACE, key)?;
    }
    Ok(present)
}

/// Every unacknowledged entry, oldest first.
pub(crate) fn pending(
    txn: &Transaction,
    max_envelope_len: usize,
) -> Result<Vec<Outbound>, MlsError> {
    let corrupted = |reason| MlsError::CorruptedState {
        namespace: OUTBOX_NAMESPACE,
        reason,
    };
    let mut out = Vec::new();
    for (key, bytes) in txn.scan_prefix(OUTBOX_NAMESPACE, &Key::empty())? {
        let id = key
            .segments()
            .next()
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(|b| OutboxId(u64::from_be_bytes(b)))
            .ok_or_else(|| corrupted("outbox key is not a sequence number"))?;
        let mut reader = bytes.as_slice();
        let record = OutboxRecordWire::tls_deserialize(&mut reader)
            .map_err(|_| corrupted("outbox record does not decode"))?;
        if record.version != RECORD_VERSION {
            return Err(MlsError::UnsupportedStateVersion {
                what: "outbox record",
                found: u32::from(record.version),
                supported: u32::from(RECORD_VERSION),
            });
        }
        // Our own envelopes may be larger than what we accept from others (a Welcome for a big
        // group), so the bound here is generous.
        let envelope = Envelope::from_bytes(
            record.envelope.as_slice(),
            max_envelope_len.saturating_mul(16),
        )
        .map_err(|_| corrupted("outbox envelope does not decode"))?;
        let group = (record.has_group == 1).then(|| GroupId::from_slice(record.group.as_slice()));
        let devices = record
            .devices
            .iter()
            .map(|d| DeviceAddress {
                user_id: core_identity::UserId::from_bytes(d.user_id),
                device_id: core_identity::DeviceId::from_bytes(d.device_id),
            })
            .collect();
        out.push(Outbound {
            id,
            to: Recipients { group, devices },
            envelope,
        });
    }
    Ok(out)
}
