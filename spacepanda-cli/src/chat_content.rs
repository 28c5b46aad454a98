//! What the CLI puts in an MLS application message: a line of text, or the name a group is
//! known by (sent by the member who created or renamed it, so that invitees see the same
//! name). CBOR, so that later versions can add kinds; a kind this version does not know is
//! shown as such, never dropped silently.

use serde::{Deserialize, Serialize};

/// One message's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ChatContent {
    /// A line typed by the sender.
    Text(String),
    /// The group's name, as the sender calls it.
    GroupName(String),
}

/// What a received body turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Received {
    Content(ChatContent),
    /// Not something this version can read (another client, a newer kind).
    Unreadable {
        len: usize,
    },
}

impl ChatContent {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        // Writing a small enum into a Vec cannot fail; an empty body would be shown as
        // unreadable by the receiver rather than panic here.
        if ciborium::into_writer(self, &mut bytes).is_err() {
            bytes.clear();
        }
        bytes
    }

    pub(crate) fn decode(body: &[u8]) -> Received {
        match ciborium::from_reader::<Self, _>(body) {
            Ok(content) => Received::Content(content),
            Err(_) => Received::Unreadable { len: body.len() },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]

    use super::*;

    #[test]
    fn contents_round_trip_and_other_bytes_are_unreadable() {
        for content in [
            ChatContent::Text("héllo, world".into()),
            ChatContent::Text(String::new()),
            ChatContent::GroupName("team".into()),
        ] {
            assert_eq!(
                ChatContent::decode(&content.encode()),
                Received::Content(content)
            );
        }
        assert_eq!(
            ChatContent::decode(b"plain bytes from another client"),
            Received::Unreadable { len: 31 }
        );
        assert_eq!(ChatContent::decode(&[]), Received::Unreadable { len: 0 });
    }
}
