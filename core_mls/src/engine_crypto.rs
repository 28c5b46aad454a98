//! The engine's crypto provider: OpenMLS's RustCrypto for every deterministic primitive, with
//! every random draw taken from one ChaCha20 CSPRNG that the engine owns.
//!
//! Why not `RustCrypto` alone: it seeds its own RNG from the OS, and its HPKE (hpke-rs) makes
//! a fresh OS-seeded PRNG for every seal, so two runs of one simulator seed would differ in
//! every ephemeral key, leaf secret and commit ref, and so in which concurrent commit wins.
//! Here the randomness of the whole engine — `OpenMlsRand` (leaf secrets, path secrets, init
//! keys, nonces' reuse guards, group and message ids), key generation, and the HPKE ephemeral
//! key of every seal — comes from [`EngineCrypto`]'s one generator:
//! - in production it is seeded from the operating system once, when the engine opens;
//! - in tests and the simulator it is seeded by the caller ([`MlsClient::open_seeded`](crate::MlsClient::open_seeded)),
//!   so a run replays exactly.
//!
//! No primitive is implemented here: HPKE is hpke-rs with the RustCrypto backend
//! (`hpke_rs_rust_crypto`), signatures, AEAD, HKDF and hashes are `RustCrypto`'s. The only
//! thing replaced is where hpke-rs gets its randomness: [`EngineHpke`] is hpke-rs's RustCrypto
//! backend with a PRNG seeded from the engine's generator just before each seal.

use std::cell::Cell;
use std::sync::{Mutex, PoisonError};

use hpke_rs::{Hpke, Mode};
use hpke_rs_crypto::types::{AeadAlgorithm, KdfAlgorithm, KemAlgorithm};
use hpke_rs_crypto::{HpkeCrypto, HpkeTestRng};
use hpke_rs_rust_crypto::HpkeRustCrypto;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::random::OpenMlsRand;
use openmls_traits::types::{
    AeadType, Ciphersuite, CryptoError, ExporterSecret, HashType, HpkeAeadType, HpkeCiphertext,
    HpkeConfig, HpkeKdfType, HpkeKemType, HpkeKeyPair, SignatureScheme,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};
use zeroize::Zeroize;

/// OpenMLS's crypto and randomness for one engine (see the module docs).
pub(crate) struct EngineCrypto {
    primitives: RustCrypto,
    rng: Mutex<ChaCha20Rng>,
}

impl std::fmt::Debug for EngineCrypto {
    // The generator's state is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCrypto").finish_non_exhaustive()
    }
}

impl EngineCrypto {
    /// Seeded from the operating system: what production uses.
    pub(crate) fn from_os_entropy() -> Self {
        Self::with_rng(ChaCha20Rng::from_entropy())
    }

    /// Seeded by the caller: every draw of the engine follows from `seed`.
    pub(crate) fn from_seed(seed: [u8; 32]) -> Self {
        Self::with_rng(ChaCha20Rng::from_seed(seed))
    }

    fn with_rng(rng: ChaCha20Rng) -> Self {
        Self {
            primitives: RustCrypto::default(),
            rng: Mutex::new(rng),
        }
    }

    fn fill(&self, out: &mut [u8]) {
        // A panic while the lock was held cannot leave a half-advanced ChaCha state that
        // matters: the worst case is a skipped block, which is still unpredictable.
        self.rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fill_bytes(out);
    }

    /// An hpke-rs instance whose PRNG is seeded from the engine's generator.
    fn hpke(&self, config: HpkeConfig) -> Result<Hpke<EngineHpke>, CryptoError> {
        let mut seed = [0u8; 32];
        self.fill(&mut seed);
        NEXT_HPKE_SEED.with(|next| next.set(Some(seed)));
        seed.zeroize();
        let hpke = Hpke::<EngineHpke>::new(
            Mode::Base,
            kem_algorithm(config.0)?,
            kdf_algorithm(config.1),
            aead_algorithm(config.2),
        );
        // `Hpke::new` took it; a leftover would only be a bug, and is never reused.
        NEXT_HPKE_SEED.with(|next| next.take());
        Ok(hpke)
    }
}

thread_local! {
    /// The seed for the PRNG of the next `Hpke<EngineHpke>`: hpke-rs asks its backend for a
    /// PRNG through an associated function with no arguments, so the seed is handed over here,
    /// set and taken on the same thread within [`EngineCrypto::hpke`].
    static NEXT_HPKE_SEED: Cell<Option<[u8; 32]>> = const { Cell::new(None) };
}

fn kem_algorithm(kem: HpkeKemType) -> Result<KemAlgorithm, CryptoError> {
    match kem {
        HpkeKemType::DhKem25519 => Ok(KemAlgorithm::DhKem25519),
        HpkeKemType::DhKemP256 => Ok(KemAlgorithm::DhKemP256),
        HpkeKemType::DhKemP384 => Ok(KemAlgorithm::DhKemP384),
        HpkeKemType::DhKemP521 => Ok(KemAlgorithm::DhKemP521),
        HpkeKemType::DhKem448 => Ok(KemAlgorithm::DhKem448),
        #[allow(unreachable_patterns)]
        _ => Err(CryptoError::UnsupportedKdf),
    }
}

fn kdf_algorithm(kdf: HpkeKdfType) -> KdfAlgorithm {
    match kdf {
        HpkeKdfType::HkdfSha256 => KdfAlgorithm::HkdfSha256,
        HpkeKdfType::HkdfSha384 => KdfAlgorithm::HkdfSha384,
        HpkeKdfType::HkdfSha512 => KdfAlgorithm::HkdfSha512,
    }
}

fn aead_algorithm(aead: HpkeAeadType) -> AeadAlgorithm {
    match aead {
        HpkeAeadType::AesGcm128 => AeadAlgorithm::Aes128Gcm,
        HpkeAeadType::AesGcm256 => AeadAlgorithm::Aes256Gcm,
        HpkeAeadType::ChaCha20Poly1305 => AeadAlgorithm::ChaCha20Poly1305,
        HpkeAeadType::Export => AeadAlgorithm::HpkeExport,
    }
}

impl OpenMlsRand for EngineCrypto {
    type Error = std::convert::Infallible;

    fn random_array<const N: usize>(&self) -> Result<[u8; N], Self::Error> {
        let mut out = [0u8; N];
        self.fill(&mut out);
        Ok(out)
    }

    fn random_vec(&self, len: usize) -> Result<Vec<u8>, Self::Error> {
        let mut out = vec![0u8; len];
        self.fill(&mut out);
        Ok(out)
    }
}

impl OpenMlsCrypto for EngineCrypto {
    fn supports(&self, ciphersuite: Ciphersuite) -> Result<(), CryptoError> {
        self.primitives.supports(ciphersuite)
    }

    fn supported_ciphersuites(&self) -> Vec<Ciphersuite> {
        self.primitives.supported_ciphersuites()
    }

    fn hkdf_extract(
        &self,
        hash_type: HashType,
        salt: &[u8],
        ikm: &[u8],
    ) -> Result<tls_codec::SecretVLBytes, CryptoError> {
        self.primitives.hkdf_extract(hash_type, salt, ikm)
    }

    fn hmac(
        &self,
        hash_type: HashType,
        key: &[u8],
        message: &[u8],
    ) -> Result<tls_codec::SecretVLBytes, CryptoError> {
        self.primitives.hmac(hash_type, key, message)
    }

    fn hkdf_expand(
        &self,
        hash_type: HashType,
        prk: &[u8],
        info: &[u8],
        okm_len: usize,
    ) -> Result<tls_codec::SecretVLBytes, CryptoError> {
        self.primitives.hkdf_expand(hash_type, prk, info, okm_len)
    }

    fn hash(&self, hash_type: HashType, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.primitives.hash(hash_type, data)
    }

    fn aead_encrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        data: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.primitives.aead_encrypt(alg, key, data, nonce, aad)
    }

    fn aead_decrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        ct_tag: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.primitives.aead_decrypt(alg, key, ct_tag, nonce, aad)
    }

    fn signature_key_gen(&self, alg: SignatureScheme) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        // The one scheme SpacePanda signs with; the engine's device keys come from
        // core_identity, so OpenMLS only reaches this through its own helpers.
        if alg != SignatureScheme::ED25519 {
            return Err(CryptoError::UnsupportedSignatureScheme);
        }
        let mut secret = [0u8; 32];
        self.fill(&mut secret);
        let key = ed25519_dalek::SigningKey::from_bytes(&secret);
        secret.zeroize();
        Ok((
            key.to_bytes().to_vec(),
            key.verifying_key().to_bytes().to_vec(),
        ))
    }

    fn verify_signature(
        &self,
        alg: SignatureScheme,
        data: &[u8],
        pk: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.primitives.verify_signature(alg, data, pk, signature)
    }

    fn sign(&self, alg: SignatureScheme, data: &[u8], key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.primitives.sign(alg, data, key)
    }

    fn hpke_seal(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        aad: &[u8],
        ptxt: &[u8],
    ) -> Result<HpkeCiphertext, CryptoError> {
        let (kem_output, ciphertext) = self
            .hpke(config)?
            .seal(&pk_r.into(), info, aad, ptxt, None, None, None)
            .map_err(|e| match e {
                hpke_rs::HpkeError::InvalidInput => CryptoError::InvalidLength,
                _ => CryptoError::CryptoLibraryError,
            })?;
        Ok(HpkeCiphertext {
            kem_output: kem_output.into(),
            ciphertext: ciphertext.into(),
        })
    }

    fn hpke_open(
        &self,
        config: HpkeConfig,
        input: &HpkeCiphertext,
        sk_r: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.primitives.hpke_open(config, input, sk_r, info, aad)
    }

    fn hpke_setup_sender_and_export(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<(Vec<u8>, ExporterSecret), CryptoError> {
        let (kem_output, context) = self
            .hpke(config)?
            .setup_sender(&pk_r.into(), info, None, None, None)
            .map_err(|_| CryptoError::SenderSetupError)?;
        let exported = context
            .export(exporter_context, exporter_length)
            .map_err(|_| CryptoError::ExporterError)?;
        Ok((kem_output, exported.into()))
    }

    fn hpke_setup_receiver_and_export(
        &self,
        config: HpkeConfig,
        enc: &[u8],
        sk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<ExporterSecret, CryptoError> {
        self.primitives.hpke_setup_receiver_and_export(
            config,
            enc,
            sk_r,
            info,
            exporter_context,
            exporter_length,
        )
    }

    fn derive_hpke_keypair(
        &self,
        config: HpkeConfig,
        ikm: &[u8],
    ) -> Result<HpkeKeyPair, CryptoError> {
        self.primitives.derive_hpke_keypair(config, ikm)
    }
}

/// hpke-rs's RustCrypto backend with the PRNG replaced (see the module docs): every primitive
/// is `HpkeRustCrypto`'s.
#[derive(Debug)]
pub(crate) struct EngineHpke;

/// The PRNG of one `Hpke<EngineHpke>`: ChaCha20 seeded from the engine's generator.
pub(crate) struct EngineHpkePrng(ChaCha20Rng);

impl Zeroize for EngineHpkePrng {
    fn zeroize(&mut self) {
        self.0 = ChaCha20Rng::from_seed([0; 32]);
    }
}

impl hpke_rs_crypto::TryRng for EngineHpkePrng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl hpke_rs_crypto::TryCryptoRng for EngineHpkePrng {}

impl HpkeTestRng for EngineHpkePrng {
    type Error = std::convert::Infallible;

    fn try_fill_test_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }

    fn seed(&mut self, seed: &[u8]) {
        let mut bytes = [0u8; 32];
        for (out, byte) in bytes.iter_mut().zip(seed) {
            *out = *byte;
        }
        self.0 = ChaCha20Rng::from_seed(bytes);
    }
}

impl HpkeCrypto for EngineHpke {
    type HpkePrng = EngineHpkePrng;

    fn name() -> String {
        "SpacePanda engine (RustCrypto)".into()
    }

    fn supports_kdf(alg: KdfAlgorithm) -> Result<(), hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::supports_kdf(alg)
    }

    fn supports_kem(alg: KemAlgorithm) -> Result<(), hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::supports_kem(alg)
    }

    fn supports_aead(alg: AeadAlgorithm) -> Result<(), hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::supports_aead(alg)
    }

    fn prng() -> Self::HpkePrng {
        let seed = NEXT_HPKE_SEED
            .with(|next| next.take())
            // Only reached if hpke-rs makes a PRNG outside `EngineCrypto::hpke` (it clones
            // one for the key schedule, which draws nothing): fresh OS entropy then.
            .unwrap_or_else(|| {
                let mut seed = [0u8; 32];
                rand_chacha::rand_core::OsRng.fill_bytes(&mut seed);
                seed
            });
        EngineHpkePrng(ChaCha20Rng::from_seed(seed))
    }

    fn kdf_extract(
        alg: KdfAlgorithm,
        salt: &[u8],
        ikm: &[u8],
    ) -> Result<Vec<u8>, hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::kdf_extract(alg, salt, ikm)
    }

    fn kdf_expand(
        alg: KdfAlgorithm,
        prk: &[u8],
        info: &[u8],
        output_size: usize,
    ) -> Result<Vec<u8>, hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::kdf_expand(alg, prk, info, output_size)
    }

    fn dh(
        alg: KemAlgorithm,
        pk: &[u8],
        sk: &[u8],
    ) -> Result<Vec<u8>, hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::dh(alg, pk, sk)
    }

    fn secret_to_public(
        alg: KemAlgorithm,
        sk: &[u8],
    ) -> Result<Vec<u8>, hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::secret_to_public(alg, sk)
    }

    fn kem_key_gen(
        alg: KemAlgorithm,
        prng: &mut Self::HpkePrng,
    ) -> Result<(Vec<u8>, Vec<u8>), hpke_rs_crypto::error::Error> {
        // Only X25519 (SpacePanda's one KEM), where every 32 bytes are a private key.
        if alg != KemAlgorithm::DhKem25519 {
            return Err(hpke_rs_crypto::error::Error::UnsupportedKemOperation);
        }
        let mut secret = vec![0u8; 32];
        prng.0.fill_bytes(&mut secret);
        let public = HpkeRustCrypto::secret_to_public(alg, &secret)?;
        Ok((public, secret))
    }

    fn kem_key_gen_derand(
        alg: KemAlgorithm,
        seed: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::kem_key_gen_derand(alg, seed)
    }

    fn kem_encaps(
        _alg: KemAlgorithm,
        _pk_r: &[u8],
        _prng: &mut Self::HpkePrng,
    ) -> Result<(Vec<u8>, Vec<u8>), hpke_rs_crypto::error::Error> {
        // Only the post-quantum KEMs come here; DH KEMs encapsulate inside hpke-rs.
        Err(hpke_rs_crypto::error::Error::UnsupportedKemOperation)
    }

    fn kem_decaps(
        alg: KemAlgorithm,
        ct: &[u8],
        sk_r: &[u8],
    ) -> Result<Vec<u8>, hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::kem_decaps(alg, ct, sk_r)
    }

    fn dh_validate_sk(
        alg: KemAlgorithm,
        sk: &[u8],
    ) -> Result<Vec<u8>, hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::dh_validate_sk(alg, sk)
    }

    fn aead_seal(
        alg: AeadAlgorithm,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        msg: &[u8],
    ) -> Result<Vec<u8>, hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::aead_seal(alg, key, nonce, aad, msg)
    }

    fn aead_open(
        alg: AeadAlgorithm,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        msg: &[u8],
    ) -> Result<Vec<u8>, hpke_rs_crypto::error::Error> {
        HpkeRustCrypto::aead_open(alg, key, nonce, aad, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: HpkeConfig = HpkeConfig(
        HpkeKemType::DhKem25519,
        HpkeKdfType::HkdfSha256,
        HpkeAeadType::AesGcm128,
    );

    fn recipient() -> HpkeKeyPair {
        RustCrypto::default()
            .derive_hpke_keypair(CONFIG, &[7; 32])
            .unwrap_or_else(|e| panic!("derive a key pair: {e:?}"))
    }

    #[test]
    fn one_seed_gives_the_same_draws_and_the_same_hpke_ciphertext() {
        let keys = recipient();
        let run = || {
            let crypto = EngineCrypto::from_seed([3; 32]);
            let drawn: [u8; 16] = crypto.random_array().unwrap_or_default();
            let sealed = crypto
                .hpke_seal(CONFIG, keys.public.as_slice(), b"info", b"aad", b"secret")
                .unwrap_or_else(|e| panic!("seal: {e:?}"));
            (drawn, sealed)
        };
        let (first_draw, first) = run();
        let (second_draw, second) = run();
        assert_eq!(first_draw, second_draw);
        assert_eq!(first.kem_output.as_slice(), second.kem_output.as_slice());
        assert_eq!(first.ciphertext.as_slice(), second.ciphertext.as_slice());
        let other = EngineCrypto::from_seed([4; 32])
            .hpke_seal(CONFIG, keys.public.as_slice(), b"info", b"aad", b"secret")
            .unwrap_or_else(|e| panic!("seal: {e:?}"));
        assert_ne!(first.kem_output.as_slice(), other.kem_output.as_slice());
    }

    #[test]
    fn a_seeded_seal_opens_with_rustcrypto_and_os_seeded_seals_differ() {
        let keys = recipient();
        let crypto = EngineCrypto::from_os_entropy();
        let a = crypto
            .hpke_seal(CONFIG, keys.public.as_slice(), b"info", b"aad", b"secret")
            .unwrap_or_else(|e| panic!("seal: {e:?}"));
        let b = crypto
            .hpke_seal(CONFIG, keys.public.as_slice(), b"info", b"aad", b"secret")
            .unwrap_or_else(|e| panic!("seal: {e:?}"));
        assert_ne!(a.kem_output.as_slice(), b.kem_output.as_slice());
        let opened = RustCrypto::default()
            .hpke_open(CONFIG, &a, &keys.private, b"info", b"aad")
            .unwrap_or_else(|e| panic!("open: {e:?}"));
        assert_eq!(opened, b"secret");
        let seeded = EngineCrypto::from_seed([9; 32])
            .hpke_seal(CONFIG, keys.public.as_slice(), b"info", b"aad", b"secret")
            .unwrap_or_else(|e| panic!("seal: {e:?}"));
        let opened = RustCrypto::default()
            .hpke_open(CONFIG, &seeded, &keys.private, b"info", b"aad")
            .unwrap_or_else(|e| panic!("open: {e:?}"));
        assert_eq!(opened, b"secret");
    }
}
