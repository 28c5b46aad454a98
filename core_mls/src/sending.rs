//! Sending an application message: encrypted for every other member in one transaction, or
//! kept (`deferred_sends`) while proposals are pending and another member is to commit them,
//! then encrypted in the epoch that commit starts (`send_deferred`, run after every commit).
//!
//! Every message sent is also logged for its epoch (`BranchRecords::sent`): if a
//! rollback abandons that epoch, it goes out again on the winning branch.

use openmls::prelude::OpenMlsProvider as _;
use openmls_traits::random::OpenMlsRand as _;

use crate::app_message::AppMessage;
use crate::branch_records::BranchRecords;
use crate::client::MlsClient;
use crate::envelope::EnvelopeKind;
use crate::error::MlsError;
use crate::events::{Event, MessageId, Output, Recipients};
use crate::group_id::GroupId;
use crate::mls_wire::encode_message;
use crate::{branch_order, deferred_sends};

impl MlsClient {
    /// Encrypts `body` for every other member. If proposals are pending (OpenMLS refuses to
    /// send then), the designated committer commits them first and any other member keeps the
    /// message until the commit arrives; either way, one transaction.
    pub fn send(&mut self, group: &GroupId, body: &[u8]) -> Result<Output, MlsError> {
        let _time = self.operation();
        if body.len() > self.config.max_application_len {
            return Err(MlsError::MessageTooLarge {
                size: body.len(),
                max: self.config.max_application_len,
            });
        }
        self.transaction(Some(group), |client| client.send_steps(group, body))
    }

    fn send_steps(&mut self, group: &GroupId, body: &[u8]) -> Result<Output, MlsError> {
        let now = self.now();
        let message_id: [u8; 16] = self
            .provider
            .rand()
            .random_array()
            .map_err(|e| MlsError::openmls("draw a message id", e))?;
        let message = AppMessage {
            message_id,
            sent_at: now,
            body: body.to_vec(),
        };
        let mut output = Output::default();
        if self.group(group)?.pending_proposals().next().is_some() {
            if !self.is_designated_committer(group)? {
                // Another member commits the pending change; encrypt once it arrives.
                self.with_txn(|txn| deferred_sends::push(txn, group, &message))?;
                output.events.push(Event::MessageSent {
                    group: group.clone(),
                    message_id: MessageId(message_id),
                });
                return Ok(output);
            }
            output.extend(self.self_update(group)?);
        }
        output.extend(self.encrypt_and_queue(group, &message)?);
        output.events.push(Event::MessageSent {
            group: group.clone(),
            message_id: MessageId(message_id),
        });
        Ok(output)
    }

    /// Inside the open transaction: encrypts and queues messages deferred while proposals were
    /// pending, once none are. Each leaves the deferred queue in the step that encrypts it.
    pub(crate) fn send_deferred(&mut self, group: &GroupId) -> Result<Output, MlsError> {
        let mut output = Output::default();
        if !self.groups.contains_key(group)
            || self.group(group)?.pending_proposals().next().is_some()
        {
            return Ok(output);
        }
        for (key, message) in self.read(|txn| deferred_sends::for_group(txn, group))? {
            output.extend(self.transaction(Some(group), |client| {
                let sent = client.encrypt_and_queue(group, &message)?;
                client.with_txn(|txn| deferred_sends::remove(txn, key))?;
                Ok(sent)
            })?);
        }
        Ok(output)
    }

    fn encrypt_and_queue(
        &mut self,
        group: &GroupId,
        message: &AppMessage,
    ) -> Result<Output, MlsError> {
        let recipients = self.other_member_devices(group)?;
        let plaintext = message.encode()?;
        self.transaction(Some(group), |client| {
            let (provider, mls_group, signer) = client.openmls_parts(group)?;
            branch_order::tag_outgoing(mls_group);
            let epoch = mls_group.epoch().as_u64();
            let sent = mls_group
                .create_message(provider, &signer, &plaintext)
                .map_err(|e| MlsError::openmls("encrypt a message", e))?;
            // Kept while a rollback could abandon this epoch, to be sent again on the winner.
            client.with_txn(|txn| BranchRecords::of(txn, group).sent(epoch, message))?;
            let message = sent;
            let mut sent = Output::default();
            if !recipients.is_empty() {
                sent.outbound.push(client.queue_outbound(
                    Recipients {
                        group: Some(group.clone()),
                        devices: recipients,
                    },
                    encode_message(EnvelopeKind::Application, &message)?,
                )?);
            }
            Ok(sent)
        })
    }
}
