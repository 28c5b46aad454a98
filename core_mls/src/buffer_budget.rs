//! Who may take room in the epoch buffer, and what makes room: a pure decision over the entries
//! already buffered (see `epoch_buffer` for the records).
//!
//! Nothing in the buffer could be authenticated when it arrived — its epoch is not reached or
//! its group not joined — so junk costs an attacker nothing. Three rules keep it from pushing
//! out what genuine members sent:
//!
//! - **A share per delivering source.** Every source
//!   ([`DeliverySource`](crate::DeliverySource); input without one shares one "unknown" share)
//!   has its own bound per group (`buffer_max_messages`, `buffer_max_bytes`), and for groups
//!   this device does not hold, across all of them (`unknown_group_max_messages`). A source
//!   that fills its share is refused; it never takes another's room.
//! - **Priority.** In a held group at epoch `c`, entries of epochs up to `c + 1` — the commit
//!   that moves the group on, the messages of the next epoch, and those of kept epochs and
//!   other branches — are the ones a genuine member most likely sent; *far-future* entries
//!   (beyond `c + 1`) get a small part of each share (`buffer_far_future_max_messages`), and
//!   everything for groups not held is low priority too. New input makes room only by pushing
//!   out entries of strictly lower priority: its own source's first, then (at the group's
//!   bound over all sources, `buffer_group_max_messages` / `buffer_group_max_bytes`, or
//!   `unknown_group_total_max_messages`) anyone's, oldest first.
//! - **Refusal, not eviction,** when there is no such room: the new envelope is
//!   [`MlsError::BufferFull`] and what is buffered stays.

use spacepanda_core::{Key, Timestamp};

use crate::config::MlsConfig;
use crate::error::MlsError;
use crate::group_id::GroupId;

/// One buffered envelope, as `epoch_buffer` stores it (defined here, below the records, since
/// the budget is decided over them).
#[derive(Debug, Clone)]
pub(crate) struct BufferedMessage {
    pub(crate) key: Key,
    pub(crate) group: GroupId,
    pub(crate) epoch: u64,
    pub(crate) received_at: Timestamp,
    /// The source that delivered it (`None`: unknown).
    pub(crate) source: Option<Vec<u8>>,
    pub(crate) envelope_bytes: Vec<u8>,
}

/// An envelope that asks for room.
#[derive(Debug)]
pub(crate) struct Arrival<'a> {
    pub(crate) group: &'a GroupId,
    pub(crate) epoch: u64,
    pub(crate) source: Option<&'a [u8]>,
    pub(crate) bytes: usize,
}

/// One bound: at most `count` entries and `bytes` bytes among the entries it covers.
struct Bound<'a> {
    covers: Box<dyn Fn(&BufferedMessage) -> bool + 'a>,
    count: usize,
    bytes: usize,
}

/// The entries to push out so that `arrival` fits, or [`MlsError::BufferFull`].
///
/// `scope`: the entries that share bounds with it — its group's if the group is held (at
/// epoch `current`), else those of every group not held. An entry already under the arrival's
/// key is not in `scope`.
pub(crate) fn make_room(
    config: &MlsConfig,
    current: Option<u64>,
    scope: &[BufferedMessage],
    arrival: &Arrival<'_>,
) -> Result<Vec<Key>, MlsError> {
    let rank = |epoch: u64| match current {
        Some(current) if epoch <= current.saturating_add(1) => 0u8,
        _ => 1,
    };
    let new_rank = rank(arrival.epoch);
    let same_source = |m: &BufferedMessage| m.source.as_deref() == arrival.source;
    let mut bounds = Vec::new();
    if current.is_some() {
        bounds.push(Bound {
            covers: Box::new(same_source),
            count: config.buffer_max_messages,
            bytes: config.buffer_max_bytes,
        });
        if new_rank > 0 {
            bounds.push(Bound {
                covers: Box::new(move |m: &BufferedMessage| same_source(m) && rank(m.epoch) > 0),
                count: config.buffer_far_future_max_messages,
                bytes: usize::MAX,
            });
        }
        bounds.push(Bound {
            covers: Box::new(|_: &BufferedMessage| true),
            count: config.buffer_group_max_messages,
            bytes: config.buffer_group_max_bytes,
        });
    } else {
        bounds.push(Bound {
            covers: Box::new(same_source),
            count: config.unknown_group_max_messages,
            bytes: config.buffer_max_bytes,
        });
        bounds.push(Bound {
            covers: Box::new(|_: &BufferedMessage| true),
            count: config.unknown_group_total_max_messages,
            bytes: config.buffer_group_max_bytes,
        });
    }
    // What may go: strictly lower priority only, oldest first.
    let mut candidates: Vec<&BufferedMessage> =
        scope.iter().filter(|m| rank(m.epoch) > new_rank).collect();
    candidates.sort_by_key(|m| m.received_at);
    let mut evicted: Vec<&BufferedMessage> = Vec::new();
    let full = || MlsError::BufferFull {
        group: arrival.group.clone(),
        epoch: arrival.epoch,
    };
    for bound in &bounds {
        let kept =
            |m: &&BufferedMessage| (bound.covers)(m) && !evicted.iter().any(|e| e.key == m.key);
        let mut count = scope.iter().filter(kept).count().saturating_add(1);
        let mut bytes = scope
            .iter()
            .filter(kept)
            .map(|m| m.envelope_bytes.len())
            .fold(arrival.bytes, usize::saturating_add);
        let mut victims = candidates
            .iter()
            .filter(|m| (bound.covers)(m) && !evicted.iter().any(|e| e.key == m.key))
            .copied()
            .collect::<Vec<_>>()
            .into_iter();
        while count > bound.count || bytes > bound.bytes {
            let victim = victims.next().ok_or_else(full)?;
            count -= 1;
            bytes = bytes.saturating_sub(victim.envelope_bytes.len());
            evicted.push(victim);
        }
    }
    Ok(evicted.into_iter().map(|m| m.key.clone()).collect())
}
