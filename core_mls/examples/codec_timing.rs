//! Measures the value codec candidates (serde_json vs CBOR via ciborium) on real OpenMLS state:
//! a group's ratchet tree at 10 and 100 members and a key package bundle.
//!
//! Run: `cargo run -p core_mls --example codec_timing --config 'profile.dev.package.core_mls.opt-level=3'`
//! (the serde code is instantiated in this crate, so it must be optimised to be measured).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    missing_docs
)]

use std::time::Instant;

use openmls::prelude::*;
use openmls::treesync::TreeSync;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::storage::StorageProvider as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

const CS: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

fn member(name: &str, provider: &OpenMlsRustCrypto) -> (CredentialWithKey, SignatureKeyPair) {
    let signer = SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
    signer.store(provider.storage()).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    (credential, signer)
}

fn per_op(iterations: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    (start.elapsed() / iterations).as_secs_f64() * 1e6
}

fn measure<T: Serialize + DeserializeOwned>(what: &str, value: &T) {
    let n = 300;
    let json = serde_json::to_vec(value).unwrap();
    let mut cbor = Vec::new();
    ciborium::into_writer(value, &mut cbor).unwrap();
    let json_enc = per_op(n, || drop(serde_json::to_vec(value).unwrap()));
    let json_dec = per_op(n, || drop(serde_json::from_slice::<T>(&json).unwrap()));
    let cbor_enc = per_op(n, || {
        let mut bytes = Vec::with_capacity(cbor.len());
        ciborium::into_writer(value, &mut bytes).unwrap();
    });
    let cbor_dec = per_op(n, || {
        drop(ciborium::from_reader::<T, _>(cbor.as_slice()).unwrap())
    });
    println!(
        "{what:<28} json {:>6} B enc {:>7.1} µs dec {:>7.1} µs | cbor {:>6} B enc {:>7.1} µs dec {:>7.1} µs",
        json.len(),
        json_enc,
        json_dec,
        cbor.len(),
        cbor_enc,
        cbor_dec
    );
}

fn main() {
    let provider = OpenMlsRustCrypto::default();
    let (alice, alice_signer) = member("alice", &provider);
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(CS)
        .use_ratchet_tree_extension(true)
        .build();

    let bundle = KeyPackage::builder()
        .build(CS, &provider, &alice_signer, alice.clone())
        .unwrap();
    measure("key package bundle", &bundle);

    for size in [10usize, 100] {
        let mut group = MlsGroup::new(&provider, &alice_signer, &config, alice.clone()).unwrap();
        let others: Vec<KeyPackage> = (1..size)
            .map(|i| {
                let other = OpenMlsRustCrypto::default();
                let (credential, signer) = member(&format!("m{i}"), &other);
                KeyPackage::builder()
                    .build(CS, &other, &signer, credential)
                    .unwrap()
                    .key_package()
                    .clone()
            })
            .collect();
        group
            .add_members(&provider, &alice_signer, &others)
            .unwrap();
        group.merge_pending_commit(&provider).unwrap();
        // Full tree: a self-update fills alice's direct path.
        group
            .self_update(&provider, &alice_signer, LeafNodeParameters::default())
            .unwrap();
        group.merge_pending_commit(&provider).unwrap();

        let tree: TreeSync = provider.storage().tree(group.group_id()).unwrap().unwrap();
        measure(&format!("tree, {size} members"), &tree);
        let context: GroupContext = provider
            .storage()
            .group_context(group.group_id())
            .unwrap()
            .unwrap();
        measure(&format!("group context, {size} members"), &context);
    }
}
