//! Engine overhead: each operation through `LoadedKey` next to the raw aws-lc-rs call on the same
//! key. The difference is what the engine costs per operation (dispatch, error-state check,
//! output allocation); it should stay well under a microsecond.

// divan groups read best with `use super::*`; benches carry no public API to document.
#![allow(missing_docs, clippy::wildcard_imports)]

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use bulwark_core::crypto::{Curve, KeySpec, LoadedKey, Provider};
use bulwark_core::mechanism::{DigestAlg, Mechanism};
use divan::{black_box, Bencher};

fn main() {
    divan::main();
}

const MSG: &[u8] = b"a 32-byte message to be signed..";

fn loaded(spec: KeySpec) -> (LoadedKey, Vec<u8>) {
    let p = Provider::get().unwrap();
    let g = p.generate(spec).unwrap();
    let stored = g.material.expose_secret().to_vec();
    (p.load(&g.material).unwrap(), stored)
}

#[divan::bench_group]
mod ecdsa_p256_sign {
    use super::*;

    #[divan::bench]
    fn engine(b: Bencher) {
        let p = Provider::get().unwrap();
        let (key, _) = loaded(KeySpec::Ec(Curve::P256));
        b.bench(|| key.sign(p, &Mechanism::EcdsaSha256, black_box(MSG)).unwrap());
    }

    #[divan::bench]
    fn raw(b: Bencher) {
        let (_, der) = loaded(KeySpec::Ec(Curve::P256));
        let kp =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap();
        let rng = SystemRandom::new();
        b.bench(|| kp.sign(&rng, black_box(MSG)).unwrap());
    }
}

#[divan::bench_group]
mod ed25519_sign {
    use super::*;

    #[divan::bench]
    fn engine(b: Bencher) {
        let p = Provider::get().unwrap();
        let (key, _) = loaded(KeySpec::Ed25519);
        b.bench(|| key.sign(p, &Mechanism::EdDsa(None), black_box(MSG)).unwrap());
    }

    #[divan::bench]
    fn raw(b: Bencher) {
        let (_, der) = loaded(KeySpec::Ed25519);
        let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap();
        b.bench(|| kp.sign(black_box(MSG)));
    }
}

#[divan::bench_group(sample_count = 20)]
mod rsa2048_sign {
    use super::*;

    #[divan::bench]
    fn engine(b: Bencher) {
        let p = Provider::get().unwrap();
        let (key, _) = loaded(KeySpec::Rsa { bits: 2048 });
        b.bench(|| key.sign(p, &Mechanism::Sha256RsaPkcs, black_box(MSG)).unwrap());
    }

    #[divan::bench]
    fn raw(b: Bencher) {
        let (_, der) = loaded(KeySpec::Rsa { bits: 2048 });
        let kp = RsaKeyPair::from_pkcs8(&der).unwrap();
        let rng = SystemRandom::new();
        b.bench(|| {
            let mut sig = vec![0u8; kp.public_modulus_len()];
            kp.sign(&signature::RSA_PKCS1_SHA256, &rng, black_box(MSG), &mut sig).unwrap();
            sig
        });
    }
}

#[divan::bench_group]
mod aes256_gcm_4k_encrypt {
    use super::*;

    #[divan::bench]
    fn engine(b: Bencher) {
        let p = Provider::get().unwrap();
        let (key, _) = loaded(KeySpec::Aes { bytes: 32 });
        let data = vec![0x5a; 4096];
        let mech = Mechanism::AesGcm { iv: vec![1; 12], aad: Vec::new(), tag_bits: 128 };
        b.bench(|| key.encrypt(p, &mech, black_box(&data)).unwrap());
    }

    #[divan::bench]
    fn raw(b: Bencher) {
        let (_, bytes) = loaded(KeySpec::Aes { bytes: 32 });
        let key = LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, &bytes).unwrap());
        let data = vec![0x5a; 4096];
        b.bench(|| {
            let mut out = black_box(&data).clone();
            let nonce = Nonce::assume_unique_for_key([1; 12]);
            key.seal_in_place_append_tag(nonce, Aad::empty(), &mut out).unwrap();
            out
        });
    }
}

#[divan::bench_group]
mod hmac_sha256_64b {
    use super::*;

    #[divan::bench]
    fn engine(b: Bencher) {
        let p = Provider::get().unwrap();
        let (key, _) = loaded(KeySpec::GenericSecret { bytes: 32 });
        let data = [0x33u8; 64];
        b.bench(|| key.sign(p, &Mechanism::Hmac(DigestAlg::Sha256), black_box(&data)).unwrap());
    }

    #[divan::bench]
    fn raw(b: Bencher) {
        let (_, bytes) = loaded(KeySpec::GenericSecret { bytes: 32 });
        let key = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
        let data = [0x33u8; 64];
        b.bench(|| hmac::sign(&key, black_box(&data)).as_ref().to_vec());
    }
}
