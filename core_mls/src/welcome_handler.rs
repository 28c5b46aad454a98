//! Joining a group from a Welcome.
//!
//! Pipeline, inside one transaction: match the Welcome to our key package ledger → OpenMLS
//! stages the join (decrypting with the package's private init key, which it deletes unless
//! last-resort) → verify every member's identity binding and the inviter's → merge → ledger
//! marks the package consumed (and a new last-resort package is made if that one was used) →
//! `Joined`. Any failure rolls the whole transaction back, so the key package stays usable for
//! a genuine Welcome.

use openmls::prelude::{StagedWelcome, Welcome};

use crate::client::MlsClient;
use crate::envelope::Envelope;
use crate::error::MlsError;
use crate::events::{Event, Output};
use crate::group_id::GroupId;
use crate::key_package_manager::{self, ledger};
use crate::seen_messages;

impl MlsClient {
    pub(crate) fn handle_welcome(
        &mut self,
        envelope: &Envelope,
        welcome: Welcome,
    ) -> Result<Output, MlsError> {
        let candidates: Vec<Vec<u8>> = welcome
            .secrets()
            .iter()
            .map(|secret| secret.new_member().as_slice().to_vec())
            .collect();
        let now = self.now();
        let join_config = self.join_config();
        let (group_id, group, events) = self.transaction(None, |client| {
            let matched =
                client.with_txn(|txn| key_package_manager::on_welcome(txn, &candidates, now))?;
            let staged =
                StagedWelcome::new_from_welcome(&client.provider, &join_config, welcome, None)
                    .map_err(|e| MlsError::InvalidWelcome {
                        reason: e.to_string(),
                    })?;
            let group_id = GroupId::from_openmls(staged.group_context().group_id());
            if client.groups.contains_key(&group_id) {
                return Err(MlsError::AlreadyJoined { group: group_id });
            }
            let members: Vec<_> = staged.members().collect();
            for member in &members {
                client
                    .members
                    .verify(&member.credential, &member.signature_key)?;
            }
            let inviter_leaf = staged
                .welcome_sender()
                .map_err(|e| MlsError::InvalidWelcome {
                    reason: e.to_string(),
                })?;
            let inviter = client.members.verify(
                inviter_leaf.credential(),
                inviter_leaf.signature_key().as_slice(),
            )?;
            let group =
                staged
                    .into_group(&client.provider)
                    .map_err(|e| MlsError::InvalidWelcome {
                        reason: e.to_string(),
                    })?;
            let epoch = group.epoch().as_u64();
            if !matched.last_resort {
                // Forward secrecy: the private init key must not outlive this Welcome. OpenMLS
                // deletes the bundle while staging; do not depend on it.
                key_package_manager::delete_private_keys(
                    &client.provider,
                    &matched.key_package_ref,
                )?;
            }
            if matched.replace_last_resort {
                // The used last-resort package stays usable until it expires; offer a new one
                // (once: a second use of the old one finds the replacement already offered).
                let entry = key_package_manager::build_key_package(
                    &client.provider,
                    &client.key_package_author(),
                    &client.config.key_packages,
                    true,
                    now,
                )?;
                client.with_txn(|txn| ledger::store(txn, &entry))?;
            }
            client.with_txn(|txn| seen_messages::record_envelope(txn, envelope.id(), now))?;
            client.record_leaf_update(&group_id, now)?;
            let events = vec![Event::Joined {
                group: group_id.clone(),
                inviter,
                epoch,
            }];
            Ok((group_id, group, events))
        })?;
        self.groups.insert(group_id.clone(), group);
        let mut output = Output {
            events,
            ..Output::default()
        };
        // Messages that raced ahead of the Welcome.
        output.extend(self.replay_buffered(&group_id)?);
        Ok(output)
    }
}
