//! Device certificates and the SpacePanda credential carried in MLS `BasicCredential`s.
//!
//! The wire format is documented on [`SpacePandaCredential`].

use spacepanda_core::Timestamp;
use tls_codec::{TlsByteVecU8, TlsDeserializeBytes, TlsSerializeBytes, TlsSize};

use crate::device::DeviceId;
use crate::display_name::DisplayName;
use crate::encoding::{decode_versioned, encode};
use crate::error::IdentityError;
use crate::identity_key::{IdentityKeyPair, IdentityPublicKey, parse_ed25519_public};
use crate::user_id::UserId;

/// Version of the credential and certificate encodings.
pub const CREDENTIAL_VERSION: u16 = 1;
/// Longest credential accepted from a peer, in bytes (a real one is at most 251).
pub const MAX_CREDENTIAL_LEN: usize = 1024;

/// The highest credential version any SpacePanda build will write: versions live in the low
/// byte of the `u16` version field (see [`SpacePandaCredential`]).
pub const MAX_CREDENTIAL_VERSION: u16 = 0x00ff;

/// Domain separation for certificate signatures.
const CERTIFICATE_LABEL: &[u8] = b"spacepanda device certificate v1";
const WHAT: &str = "credential";

/// The identity key's statement "this device, with this MLS signature key and this display
/// name, belongs to this user since this time": an Ed25519 signature over the
/// `CertificateContent` described on [`SpacePandaCredential`].
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    user_id: UserId,
    device_id: DeviceId,
    signature_public_key: [u8; 32],
    display_name: DisplayName,
    created_at: Timestamp,
    signature: [u8; 64],
}

impl DeviceCertificate {
    /// Signs a certificate for `device_id` with MLS signature key `signature_public_key`.
    pub fn issue(
        identity: &IdentityKeyPair,
        device_id: DeviceId,
        signature_public_key: [u8; 32],
        display_name: DisplayName,
        created_at: Timestamp,
    ) -> Result<Self, IdentityError> {
        let mut certificate = Self {
            user_id: identity.user_id(),
            device_id,
            signature_public_key,
            display_name,
            created_at,
            signature: [0; 64],
        };
        certificate.signature = identity.sign(&certificate.to_be_signed()?);
        Ok(certificate)
    }

    /// The exact bytes the signature covers.
    pub fn to_be_signed(&self) -> Result<Vec<u8>, IdentityError> {
        let content = CertificateContent {
            version: CREDENTIAL_VERSION,
            user_id: *self.user_id.as_bytes(),
            device_id: *self.device_id.as_bytes(),
            signature_public_key: self.signature_public_key,
            display_name: self.display_name.as_str().as_bytes().into(),
            created_at: self.created_at.unix_millis(),
        };
        let mut message = CERTIFICATE_LABEL.to_vec();
        message.extend(encode(&content, "device certificate")?);
        Ok(message)
    }

    /// Checks the signature under `identity`; a failure is
    /// [`IdentityError::BadCertificateSignature`].
    pub fn verify(&self, identity: &IdentityPublicKey) -> Result<(), IdentityError> {
        let bad = || IdentityError::BadCertificateSignature {
            user_id: self.user_id,
        };
        if identity.user_id() != self.user_id {
            return Err(bad());
        }
        if identity.verify(&self.to_be_signed()?, &self.signature) {
            Ok(())
        } else {
            Err(bad())
        }
    }

    /// The certified user.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// The certified device.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The certified MLS signature public key.
    pub fn signature_public_key(&self) -> &[u8; 32] {
        &self.signature_public_key
    }

    /// The certified display name.
    pub fn display_name(&self) -> &DisplayName {
        &self.display_name
    }

    /// When the certificate was issued.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The Ed25519 signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

impl std::fmt::Debug for DeviceCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCertificate")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field(
                "signature_public_key",
                &hex::encode(self.signature_public_key),
            )
            .field("display_name", &self.display_name)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// What goes into the identity bytes of an MLS `BasicCredential`: the device's identity public
/// key and its [`DeviceCertificate`].
///
/// Wire format of a credential (TLS presentation language, version 1, at most
/// [`MAX_CREDENTIAL_LEN`] bytes):
///
/// ```text
/// struct {
///     uint16 version = 1;
///     opaque identity_public_key[32];      // Ed25519, derives the user id
///     opaque device_id[16];
///     opaque mls_signature_public_key[32]; // the leaf's Ed25519 signature key
///     opaque display_name<1..64>;          // u8 length prefix, UTF-8
///     uint64 created_at;                   // ms since the Unix epoch
///     opaque certificate_signature[64];    // Ed25519 by the identity key
/// } SpacePandaCredential;
/// ```
///
/// The certificate signature covers `"spacepanda device certificate v1" ‖ CertificateContent`:
///
/// ```text
/// struct {
///     uint16 version = 1;
///     opaque user_id[32];
///     opaque device_id[16];
///     opaque mls_signature_public_key[32];
///     opaque display_name<1..64>;
///     uint64 created_at;
/// } CertificateContent;
/// ```
///
/// **Recognising it.** Every version of this format, present and future, is in `1..=255`
/// ([`MAX_CREDENTIAL_VERSION`]): the first byte is `0x00`, the second is not. The identity bytes
/// of another MLS application's basic credential are usually text (a name, an email address),
/// whose first byte is not zero; such bytes are [`IdentityError::NotSpacePandaCredential`], not a
/// credential "from a newer version". A version in `2..=255` is
/// [`IdentityError::UnsupportedVersion`] (a newer SpacePanda build).
///
/// The credential carries the certified MLS signature key (the design in `IDENTITY.md` left it
/// out and let the signature check alone cover it). With it, a genuine credential moved into a
/// leaf with another key is reported as [`IdentityError::SignatureKeyMismatch`] rather than as a
/// forgery, and a credential can be checked on its own before its leaf is at hand. It costs 32
/// bytes and leaks nothing: the leaf publishes the same key.
///
/// Decoding ([`from_bytes`](Self::from_bytes)) checks only structure and bounds; the binding to
/// a leaf is checked by [`verify_member`](crate::verify_member).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SpacePandaCredential {
    identity_public_key: IdentityPublicKey,
    certificate: DeviceCertificate,
}

impl SpacePandaCredential {
    /// Issues a credential for a device of the user of `identity`.
    pub fn issue(
        identity: &IdentityKeyPair,
        device_id: DeviceId,
        signature_public_key: [u8; 32],
        display_name: DisplayName,
        created_at: Timestamp,
    ) -> Result<Self, IdentityError> {
        Ok(Self {
            identity_public_key: identity.public_key(),
            certificate: DeviceCertificate::issue(
                identity,
                device_id,
                signature_public_key,
                display_name,
                created_at,
            )?,
        })
    }

    /// The encoding (at most [`MAX_CREDENTIAL_LEN`] bytes).
    pub fn to_bytes(&self) -> Result<Vec<u8>, IdentityError> {
        let certificate = &self.certificate;
        let wire = CredentialWire {
            version: CREDENTIAL_VERSION,
            identity_public_key: *self.identity_public_key.as_bytes(),
            device_id: *certificate.device_id.as_bytes(),
            signature_public_key: certificate.signature_public_key,
            display_name: certificate.display_name.as_str().as_bytes().into(),
            created_at: certificate.created_at.unix_millis(),
            certificate_signature: certificate.signature,
        };
        encode(&wire, WHAT)
    }

    /// Decodes bytes from a peer, checking sizes, version and field validity (public keys are
    /// curve points, the display name follows the rules). Does **not** check the certificate.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        not_another_applications(bytes)?;
        let wire: CredentialWire = decode_versioned(bytes, MAX_CREDENTIAL_LEN, CREDENTIAL_VERSION)
            .map_err(|error| error.into_peer_error(WHAT))?;
        let identity_public_key = IdentityPublicKey::from_bytes(&wire.identity_public_key)
            .map_err(|_| IdentityError::Malformed {
                what: WHAT,
                reason: "identity public key is not a valid Ed25519 key",
            })?;
        parse_ed25519_public(&wire.signature_public_key, WHAT).map_err(|_| {
            IdentityError::Malformed {
                what: WHAT,
                reason: "MLS signature public key is not a valid Ed25519 key",
            }
        })?;
        let display_name = DisplayName::from_peer_bytes(wire.display_name.into_vec())?;
        Ok(Self {
            certificate: DeviceCertificate {
                user_id: identity_public_key.user_id(),
                device_id: DeviceId::from_bytes(wire.device_id),
                signature_public_key: wire.signature_public_key,
                display_name,
                created_at: Timestamp::from_unix_millis(wire.created_at),
                signature: wire.certificate_signature,
            },
            identity_public_key,
        })
    }

    /// The user's identity public key.
    pub fn identity_public_key(&self) -> &IdentityPublicKey {
        &self.identity_public_key
    }

    /// The user: derived from the identity public key, never read from the bytes.
    pub fn user_id(&self) -> UserId {
        self.certificate.user_id
    }

    /// The device certificate.
    pub fn certificate(&self) -> &DeviceCertificate {
        &self.certificate
    }
}

/// Refuses bytes whose first two cannot be a SpacePanda version (see "Recognising it" on
/// [`SpacePandaCredential`]). Shorter input is left to the decoder (truncated).
fn not_another_applications(bytes: &[u8]) -> Result<(), IdentityError> {
    let found = match bytes {
        [high, low, ..] => match u16::from_be_bytes([*high, *low]) {
            0 => "version field 0, which SpacePanda never writes",
            version if version > MAX_CREDENTIAL_VERSION => {
                "its first two bytes are no SpacePanda version (those are 1 to 255)"
            }
            _ => return Ok(()),
        },
        [high] if *high != 0 => "its first byte is not zero, as every SpacePanda version's is",
        _ => return Ok(()),
    };
    Err(IdentityError::NotSpacePandaCredential { what: WHAT, found })
}

#[derive(TlsSerializeBytes, TlsDeserializeBytes, TlsSize)]
struct CertificateContent {
    version: u16,
    user_id: [u8; 32],
    device_id: [u8; 16],
    signature_public_key: [u8; 32],
    display_name: TlsByteVecU8,
    created_at: u64,
}

#[derive(TlsSerializeBytes, TlsDeserializeBytes, TlsSize)]
struct CredentialWire {
    version: u16,
    identity_public_key: [u8; 32],
    device_id: [u8; 16],
    signature_public_key: [u8; 32],
    display_name: TlsByteVecU8,
    created_at: u64,
    certificate_signature: [u8; 64],
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::device::DeviceSignatureKeyPair;
    use proptest::prelude::*;

    fn credential(name: &str, millis: u64) -> (IdentityKeyPair, SpacePandaCredential) {
        let identity = IdentityKeyPair::generate();
        let credential = SpacePandaCredential::issue(
            &identity,
            DeviceId::generate(),
            DeviceSignatureKeyPair::generate().public_key_bytes(),
            DisplayName::new(name).unwrap(),
            Timestamp::from_unix_millis(millis),
        )
        .unwrap();
        (identity, credential)
    }

    #[test]
    fn encoding_has_the_documented_layout() {
        let (identity, credential) = credential("alice", 1_700_000_000_000);
        let bytes = credential.to_bytes().unwrap();
        assert_eq!(bytes.len(), 2 + 32 + 16 + 32 + 1 + 5 + 8 + 64);
        assert_eq!(&bytes[..2], &[0, 1]);
        assert_eq!(&bytes[2..34], identity.public_key().as_bytes());
        assert_eq!(bytes[82], 5);
        assert_eq!(&bytes[83..88], b"alice");
        assert_eq!(
            SpacePandaCredential::from_bytes(&bytes).unwrap(),
            credential
        );
    }

    #[test]
    fn certificate_verifies_only_under_its_identity() {
        let (identity, credential) = credential("bob", 7);
        assert!(
            credential
                .certificate()
                .verify(&identity.public_key())
                .is_ok()
        );
        let other = IdentityKeyPair::generate().public_key();
        assert!(matches!(
            credential.certificate().verify(&other),
            Err(IdentityError::BadCertificateSignature { .. })
        ));
    }

    #[test]
    fn another_applications_identity_is_not_taken_for_a_newer_version() {
        // "player-1" as the identity of another application's basic credential: its first two
        // bytes read as version 28780.
        for bytes in [
            &b"player-1"[..],
            b"alice@example.org",
            &[0xff; 300],
            &[0, 0, 1, 2],
        ] {
            let error = SpacePandaCredential::from_bytes(bytes).unwrap_err();
            assert!(
                matches!(
                    error,
                    IdentityError::NotSpacePandaCredential {
                        what: "credential",
                        ..
                    }
                ),
                "{bytes:?}: {error:?}"
            );
            let text = error.to_string();
            assert!(text.contains("not a SpacePanda credential"), "{text}");
            assert!(
                !text.contains("version 28780") && !text.contains("upgrade"),
                "{text}"
            );
        }
        // A plausible newer SpacePanda version is still reported as one.
        let (_, credential) = credential("erin", 5);
        let mut newer = credential.to_bytes().unwrap();
        newer[1] = 7;
        assert!(matches!(
            SpacePandaCredential::from_bytes(&newer),
            Err(IdentityError::UnsupportedVersion { found: 7, .. })
        ));
    }

    #[test]
    fn debug_shows_no_signature_bytes() {
        let (_, credential) = credential("carol", 1);
        let debug = format!("{credential:?}");
        assert!(debug.contains("carol"));
        assert!(!debug.contains(&hex::encode(credential.certificate().signature())));
    }

    proptest! {
        #[test]
        fn credentials_round_trip(
            name in "[a-zA-Z0-9 _.-]{0,62}[a-z]",
            millis in any::<u64>(),
            device in any::<[u8; 16]>(),
        ) {
            let identity = IdentityKeyPair::generate();
            let credential = SpacePandaCredential::issue(
                &identity,
                DeviceId::from_bytes(device),
                DeviceSignatureKeyPair::generate().public_key_bytes(),
                DisplayName::new(name.trim_start()).unwrap(),
                Timestamp::from_unix_millis(millis),
            )
            .unwrap();
            let bytes = credential.to_bytes().unwrap();
            prop_assert!(bytes.len() <= MAX_CREDENTIAL_LEN);
            let decoded = SpacePandaCredential::from_bytes(&bytes).unwrap();
            prop_assert!(decoded.certificate().verify(&identity.public_key()).is_ok());
            prop_assert_eq!(decoded, credential);
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = SpacePandaCredential::from_bytes(&bytes);
        }

        #[test]
        fn decoding_mutated_credentials_never_panics(
            index in 0usize..300,
            value in any::<u8>(),
            cut in 0usize..300,
        ) {
            let (_, credential) = credential("dave", 99);
            let mut bytes = credential.to_bytes().unwrap();
            let len = bytes.len();
            bytes[index % len] = value;
            bytes.truncate(cut.max(1));
            let _ = SpacePandaCredential::from_bytes(&bytes);
        }
    }
}
