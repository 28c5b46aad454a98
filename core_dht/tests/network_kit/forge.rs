//! Records built by hand from the documented wire format (core_dht::records, "Format"), so
//! tests can make every kind of forgery, and so the format itself is pinned by a second
//! implementation.

use libp2p::PeerId;
use serde::Serialize;

pub const SIGNATURE_LABEL: &[u8] = b"spacepanda/record/v1\0";
pub const KIND_USER: u8 = 1;
pub const KIND_KEY_PACKAGES: u8 = 2;

#[derive(Serialize)]
struct WireValue {
    v: u8,
    kind: u8,
    entries: Vec<WireEntry>,
}

#[derive(Serialize)]
struct WireEntry {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signer: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

#[derive(Serialize)]
struct UserBody {
    seq: u64,
    issued_at: u64,
    expires_at: u64,
    display_name: String,
    devices: Vec<UserBodyDevice>,
}

#[derive(Serialize)]
struct UserBodyDevice {
    #[serde(with = "serde_bytes")]
    credential: Vec<u8>,
    #[serde(with = "serde_bytes")]
    peer_id: Vec<u8>,
    addresses: Vec<serde_bytes::ByteBuf>,
}

#[derive(Serialize)]
struct KeyPackageBody {
    seq: u64,
    issued_at: u64,
    expires_at: u64,
    #[serde(with = "serde_bytes")]
    credential: Vec<u8>,
    key_packages: Vec<serde_bytes::ByteBuf>,
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("cbor");
    out
}

/// The message an entry's signature covers.
pub fn signed_message(kind: u8, key: &[u8; 32], body: &[u8]) -> Vec<u8> {
    let mut message = SIGNATURE_LABEL.to_vec();
    message.push(kind);
    message.extend_from_slice(key);
    message.extend_from_slice(body);
    message
}

/// A one-entry value: `body` signed by `sign`, naming `signer`.
pub fn value(
    kind: u8,
    key: &[u8; 32],
    body: Vec<u8>,
    signer: [u8; 32],
    sign: impl FnOnce(&[u8]) -> [u8; 64],
) -> Vec<u8> {
    let signature = sign(&signed_message(kind, key, &body));
    cbor(&WireValue {
        v: 1,
        kind,
        entries: vec![WireEntry {
            body,
            signer: signer.to_vec(),
            signature: signature.to_vec(),
        }],
    })
}

/// A user record body with one device.
pub fn user_body(
    seq: u64,
    issued_at_ms: u64,
    expires_at_ms: u64,
    name: &str,
    credential: &[u8],
    peer: PeerId,
) -> Vec<u8> {
    cbor(&UserBody {
        seq,
        issued_at: issued_at_ms,
        expires_at: expires_at_ms,
        display_name: name.to_owned(),
        devices: vec![UserBodyDevice {
            credential: credential.to_vec(),
            peer_id: peer.to_bytes(),
            addresses: Vec::new(),
        }],
    })
}

/// A key package record body.
pub fn key_package_body(
    seq: u64,
    issued_at_ms: u64,
    expires_at_ms: u64,
    credential: &[u8],
    packages: &[Vec<u8>],
) -> Vec<u8> {
    cbor(&KeyPackageBody {
        seq,
        issued_at: issued_at_ms,
        expires_at: expires_at_ms,
        credential: credential.to_vec(),
        key_packages: packages
            .iter()
            .map(|p| serde_bytes::ByteBuf::from(p.clone()))
            .collect(),
    })
}
