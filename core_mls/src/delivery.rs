//! Where envelopes from the network enter the engine, with who delivered them: the source is
//! carried in [`MlsClient`] for the one operation (like its time), so that what the pipeline
//! buffers counts against that source's share of the epoch buffer (`buffer_budget`) without
//! every step passing it along.

use crate::client::MlsClient;
use crate::envelope::Envelope;
use crate::error::MlsError;
use crate::events::{DeliverySource, Output};

impl MlsClient {
    /// Processes one envelope from the network, in one transaction with all it sets off (replays,
    /// re-issues, deferred sends). Returns what happened; a rejected envelope is a typed error
    /// and changes nothing.
    ///
    /// Without a source: what it may buffer counts against the one share of the buffer that
    /// every envelope of unknown origin shares (see
    /// [`handle_envelope_from`](Self::handle_envelope_from)).
    pub fn handle_envelope(&mut self, bytes: &[u8]) -> Result<Output, MlsError> {
        self.handle_from(bytes, None)
    }

    /// [`handle_envelope`](Self::handle_envelope) for an envelope delivered by `source` (the
    /// peer the network layer got it from). What it buffers counts against that source's own
    /// share of the epoch buffer, so junk from one peer cannot push out what others delivered;
    /// an envelope that finds its source's share full is refused with
    /// [`MlsError::BufferFull`].
    pub fn handle_envelope_from(
        &mut self,
        bytes: &[u8],
        source: &DeliverySource,
    ) -> Result<Output, MlsError> {
        self.handle_from(bytes, Some(source.clone()))
    }

    /// Processes a batch of envelopes (a mailbox fetch, a burst of pushes) in one transaction:
    /// one durable write for the batch instead of one per envelope. Results stay per envelope,
    /// in order, as [`handle_envelope`](Self::handle_envelope) would have returned them: an
    /// envelope that is refused is rolled back on its own (a savepoint) and the others are kept.
    ///
    /// The outer error is a local failure (storage, or a bug) met by any of them: then nothing
    /// of the batch is written and it can be handed in again. What the batch makes to send
    /// (a commit re-issued, a deferred send) is in the outbox before the call returns, so
    /// nothing leaves before it is durable.
    pub fn handle_envelopes(
        &mut self,
        envelopes: &[&[u8]],
    ) -> Result<Vec<Result<Output, MlsError>>, MlsError> {
        self.handle_batch_from(envelopes, None)
    }

    /// [`handle_envelopes`](Self::handle_envelopes) for envelopes delivered by `source` (for
    /// the buffer's shares, as [`handle_envelope_from`](Self::handle_envelope_from)).
    pub fn handle_envelopes_from(
        &mut self,
        envelopes: &[&[u8]],
        source: &DeliverySource,
    ) -> Result<Vec<Result<Output, MlsError>>, MlsError> {
        self.handle_batch_from(envelopes, Some(source.clone()))
    }

    fn handle_batch_from(
        &mut self,
        envelopes: &[&[u8]],
        source: Option<DeliverySource>,
    ) -> Result<Vec<Result<Output, MlsError>>, MlsError> {
        let _time = self.operation();
        let outer = std::mem::replace(&mut self.source, source);
        let max_len = self.config.max_envelope_len;
        let mut written = self.lessons.clone();
        let result = self.transaction(None, |client| {
            client.write_lessons(&written)?;
            let mut results = Vec::with_capacity(envelopes.len());
            for bytes in envelopes {
                // Each envelope is a step: a refusal rolls back to its savepoint only.
                let one = Envelope::from_bytes(bytes, max_len).and_then(|envelope| {
                    client.transaction(None, |client| client.handle_decoded(envelope, None))
                });
                match one {
                    Err(error) if error.is_local() => return Err(error),
                    one => results.push(one),
                }
                // What a refused Welcome taught, kept with the batch.
                let fresh: Vec<_> = client
                    .lessons
                    .iter()
                    .filter(|lesson| !written.contains(lesson))
                    .cloned()
                    .collect();
                client.write_lessons(&fresh)?;
                written.extend(fresh);
            }
            Ok(results)
        });
        if result.is_ok() {
            self.lessons.retain(|lesson| !written.contains(lesson));
        }
        self.source = outer;
        result
    }

    fn handle_from(
        &mut self,
        bytes: &[u8],
        source: Option<DeliverySource>,
    ) -> Result<Output, MlsError> {
        let _time = self.operation();
        // Restored on every return: nested operations (none today) keep the outer source.
        let outer = std::mem::replace(&mut self.source, source);
        let lessons = self.lessons.clone();
        let result =
            Envelope::from_bytes(bytes, self.config.max_envelope_len).and_then(|envelope| {
                self.transaction(None, |client| {
                    client.write_lessons(&lessons)?;
                    client.handle_decoded(envelope, None)
                })
            });
        if result.is_ok() {
            // Written: the operation committed.
            self.lessons.retain(|lesson| !lessons.contains(lesson));
        }
        self.source = outer;
        result
    }
}
