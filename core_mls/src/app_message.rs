//! The plaintext inside an MLS application message: the body plus a sender-chosen id, so a
//! message is delivered to the app at most once even if it is re-encrypted (a re-send after a
//! crash, or a re-issue after a concurrent commit lost).

use spacepanda_core::Timestamp;
use tls_codec::{
    Deserialize as _, Serialize as _, TlsByteVecU32, TlsDeserialize, TlsSerialize, TlsSize,
};

use crate::error::MlsError;

const APP_MESSAGE_VERSION: u8 = 1;

#[derive(TlsSerialize, TlsDeserialize, TlsSize)]
struct AppMessageWire {
    version: u8,
    message_id: [u8; 16],
    sent_at_ms: u64,
    body: TlsByteVecU32,
}

/// A decoded application payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppMessage {
    pub(crate) message_id: [u8; 16],
    pub(crate) sent_at: Timestamp,
    pub(crate) body: Vec<u8>,
}

impl AppMessage {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, MlsError> {
        AppMessageWire {
            version: APP_MESSAGE_VERSION,
            message_id: self.message_id,
            sent_at_ms: self.sent_at.unix_millis(),
            body: self.body.clone().into(),
        }
        .tls_serialize_detached()
        .map_err(|_| MlsError::Internal {
            what: "application message does not encode",
        })
    }

    /// Decodes a peer's plaintext. The MLS layer already bounds its size.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, MlsError> {
        let mut reader = bytes;
        let wire = AppMessageWire::tls_deserialize(&mut reader).map_err(|_| {
            MlsError::MalformedApplicationMessage {
                reason: "plaintext is not a SpacePanda application message",
            }
        })?;
        if !reader.is_empty() {
            return Err(MlsError::MalformedApplicationMessage {
                reason: "trailing bytes after the application message",
            });
        }
        if wire.version != APP_MESSAGE_VERSION {
            return Err(MlsError::MalformedApplicationMessage {
                reason: "unknown application message version",
            });
        }
        Ok(Self {
            message_id: wire.message_id,
            sent_at: Timestamp::from_unix_millis(wire.sent_at_ms),
            body: wire.body.into_vec(),
        })
    }
}
