//! What a holder's mailboxes take (envelopes and bytes per mailbox, envelopes per sender,
//! bytes in all): the numbers every quota is checked against, kept in memory in step with
//! each write of the holder store and rebuilt from the store at open.

use std::collections::HashMap;

use super::MailboxKey;

/// What one mailbox takes.
#[derive(Debug, Default)]
pub(super) struct MailboxUsage {
    pub(super) envelopes: u64,
    pub(super) bytes: u64,
    pub(super) per_sender: HashMap<Vec<u8>, u64>,
}

/// What the store holds, kept in step with every write.
#[derive(Debug, Default)]
pub(super) struct Usage {
    pub(super) mailboxes: HashMap<MailboxKey, MailboxUsage>,
    pub(super) total_bytes: u64,
    /// The last arrival number given.
    pub(super) arrival: u64,
}

impl Usage {
    pub(super) fn add(&mut self, mailbox: &MailboxKey, sender: &[u8], len: u64) {
        let usage = self.mailboxes.entry(*mailbox).or_default();
        usage.envelopes = usage.envelopes.saturating_add(1);
        usage.bytes = usage.bytes.saturating_add(len);
        let count = usage.per_sender.entry(sender.to_vec()).or_default();
        *count = count.saturating_add(1);
        self.total_bytes = self.total_bytes.saturating_add(len);
    }

    pub(super) fn remove(&mut self, mailbox: &MailboxKey, sender: &[u8], len: u64) {
        self.total_bytes = self.total_bytes.saturating_sub(len);
        let Some(usage) = self.mailboxes.get_mut(mailbox) else {
            return;
        };
        usage.envelopes = usage.envelopes.saturating_sub(1);
        usage.bytes = usage.bytes.saturating_sub(len);
        if let Some(count) = usage.per_sender.get_mut(sender) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                usage.per_sender.remove(sender);
            }
        }
        if usage.envelopes == 0 {
            self.mailboxes.remove(mailbox);
        }
    }

    /// (envelopes, bytes, envelopes of `sender`) held for `mailbox`.
    pub(super) fn of(&self, mailbox: &MailboxKey, sender: &[u8]) -> (u64, u64, u64) {
        self.mailboxes.get(mailbox).map_or((0, 0, 0), |usage| {
            let of_sender = usage.per_sender.get(sender).copied().unwrap_or(0);
            (usage.envelopes, usage.bytes, of_sender)
        })
    }
}
