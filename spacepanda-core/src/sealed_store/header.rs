//! The clear header: format version, how the master key is made, and a key-check value.

use super::{ByteReader, FORMAT_VERSION, HEADER_NAMESPACE};
use crate::{StoreError, StoreResult};

const HEADER_MAGIC: &[u8; 8] = b"SPSEALED";
const HEADER_LEN: usize = 8 + 4 + 1 + 12 + SALT_LEN + 32;
pub(super) const SALT_LEN: usize = 16;

const KDF_RAW: u8 = 1;
const KDF_ARGON2ID: u8 = 2;

/// Argon2id cost parameters for a passphrase-derived master key.
///
/// A header on disk is outside data, so `open` accepts only parameters up to
/// [`KdfParams::MAX_ACCEPTED`] (64 MiB, 4 passes, 4 lanes: a little over three times the
/// default) and refuses anything above as corrupted before deriving anything; `create` refuses
/// the same parameters, so no store this build writes is one it cannot open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The most expensive parameters accepted, from a caller or from a header on disk. A planted
    /// header can make `open` allocate at most this much and run this many passes.
    pub const MAX_ACCEPTED: Self = Self {
        memory_kib: 64 * 1024,
        iterations: 4,
        parallelism: 4,
    };

    /// Cheap parameters for tests and benchmarks only (8 MiB, 1 pass).
    pub const INSECURE_FOR_TESTS: Self = Self {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };

    pub(super) fn within_bounds(self) -> bool {
        (1..=Self::MAX_ACCEPTED.parallelism).contains(&self.parallelism)
            // Argon2 needs 8 KiB per lane.
            && (8 * self.parallelism..=Self::MAX_ACCEPTED.memory_kib).contains(&self.memory_kib)
            && (1..=Self::MAX_ACCEPTED.iterations).contains(&self.iterations)
    }
}

impl Default for KdfParams {
    /// OWASP's recommended Argon2id setting: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// How the master key of a store is made, as recorded in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeySource {
    Raw,
    Passphrase {
        params: KdfParams,
        salt: [u8; SALT_LEN],
    },
}

pub(super) struct Header {
    pub(super) source: KeySource,
    pub(super) key_check: [u8; 32],
}

impl Header {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(HEADER_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        let (kind, params, salt) = match self.source {
            KeySource::Raw => (
                KDF_RAW,
                KdfParams {
                    memory_kib: 0,
                    iterations: 0,
                    parallelism: 0,
                },
                [0u8; SALT_LEN],
            ),
            KeySource::Passphrase { params, salt } => (KDF_ARGON2ID, params, salt),
        };
        out.push(kind);
        out.extend_from_slice(&params.memory_kib.to_be_bytes());
        out.extend_from_slice(&params.iterations.to_be_bytes());
        out.extend_from_slice(&params.parallelism.to_be_bytes());
        out.extend_from_slice(&salt);
        out.extend_from_slice(&self.key_check);
        out
    }

    /// Parses a header, refusing other versions and out-of-bounds parameters before anything is
    /// derived from it.
    pub(super) fn decode(bytes: &[u8]) -> StoreResult<Self> {
        let corrupted = |reason| StoreError::corrupted(HEADER_NAMESPACE, reason);
        let mut reader = ByteReader(bytes);
        if reader.take(HEADER_MAGIC.len()) != Some(&HEADER_MAGIC[..]) {
            return Err(corrupted("header magic missing"));
        }
        let version = reader.u32().ok_or_else(|| corrupted("header truncated"))?;
        if version != FORMAT_VERSION {
            return Err(StoreError::UnsupportedFormat {
                what: "sealed store header",
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let truncated = || corrupted("header truncated");
        let kind = reader.u8().ok_or_else(truncated)?;
        let params = KdfParams {
            memory_kib: reader.u32().ok_or_else(truncated)?,
            iterations: reader.u32().ok_or_else(truncated)?,
            parallelism: reader.u32().ok_or_else(truncated)?,
        };
        let salt = reader.array::<SALT_LEN>().ok_or_else(truncated)?;
        let key_check = reader.array::<32>().ok_or_else(truncated)?;
        if !reader.0.is_empty() {
            return Err(corrupted("header has trailing bytes"));
        }
        let source = match kind {
            KDF_RAW => KeySource::Raw,
            KDF_ARGON2ID if params.within_bounds() => KeySource::Passphrase { params, salt },
            KDF_ARGON2ID => {
                return Err(corrupted(
                    "header key derivation parameters above the accepted maximum",
                ));
            }
            _ => return Err(corrupted("header names an unknown key derivation")),
        };
        Ok(Self { source, key_check })
    }
}
