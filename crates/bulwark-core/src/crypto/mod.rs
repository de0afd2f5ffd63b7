//! The crypto engine: every cryptographic operation of the HSM, on aws-lc-rs, behind one
//! provider value.
//!
//! [`Provider`] runs the power-on self-tests once per process and then hands out key generation,
//! import, loading, random bytes and digests; [`LoadedKey`] / [`LoadedPublicKey`] hold keys parsed
//! once into aws-lc-rs objects and perform sign, verify, encrypt, decrypt, wrap, unwrap, derive
//! and (de)capsulation. After any self-test, pairwise-consistency or RNG-health failure the
//! provider is in the error state and refuses every service with [`Error::ErrorState`].
//!
//! This module must never log, print or return key material except as [`KeyMaterial`] /
//! [`SecretBytes`], and its errors carry no cause for failed decryptions, unwraps or signature
//! checks (no oracle).

mod cipher;
pub(crate) mod der;
mod derive;
mod evp_rsa;
mod generate;
mod import;
mod keys;
mod loaded;
mod rng;
mod sign;
mod wrap;

use std::sync::{Mutex, OnceLock};

use aws_lc_rs::digest;
use zeroize::Zeroizing;

pub use cipher::{aes_decrypt_len_max, aes_encrypt_len};
pub use import::PrivateComponents;
pub use keys::{
    Curve, GeneratedKey, KeyMaterial, KeySpec, MlDsaParam, MlKemParam, PublicKey,
    GENERIC_SECRET_MAX,
};
pub use loaded::{LoadedKey, LoadedPublicKey};
pub use sign::{ecdsa_der_to_raw, ecdsa_raw_to_der, rsa_digest_info};

use crate::error::{Error, Result};
use crate::mechanism::DigestAlg;
use crate::secret::SecretBytes;
use crate::selftest::{self, SelfTestResult};

/// A fault to inject in tests: a KAT whose expected value is corrupted, or a pairwise-consistency
/// test that is made to fail. Exists only in `cfg(test)` builds.
#[cfg(test)]
#[derive(Clone, Debug)]
pub(crate) enum Fault {
    /// Corrupt the expected value of the named known-answer test.
    Kat(&'static str),
    /// Make every pairwise-consistency test fail.
    Pct,
}

/// The crypto provider: self-test state, the RNG health test and the engine's entry points.
///
/// Obtain the process-wide instance with [`Provider::get`]. It is `Send + Sync` and used by
/// reference; every method first checks the error state.
pub struct Provider {
    error: OnceLock<String>,
    rng: Mutex<rng::ContinuousTest>,
    report: OnceLock<Vec<SelfTestResult>>,
    #[cfg(test)]
    fault: Option<Fault>,
}

static PROVIDER: OnceLock<Provider> = OnceLock::new();

impl Provider {
    /// The process-wide provider. The first call runs the power-on self-tests.
    ///
    /// # Errors
    /// [`Error::ErrorState`] (naming the failed test) when the module is in the error state.
    pub fn get() -> Result<&'static Provider> {
        let p = Self::instance();
        p.check()?;
        Ok(p)
    }

    /// The process-wide provider even when it is in the error state (for status and the
    /// self-test report). Every crypto method still refuses service in that state.
    pub fn instance() -> &'static Provider {
        PROVIDER.get_or_init(Provider::power_on)
    }

    pub(crate) fn untested() -> Provider {
        Provider {
            error: OnceLock::new(),
            rng: Mutex::new(rng::ContinuousTest::new()),
            report: OnceLock::new(),
            #[cfg(test)]
            fault: None,
        }
    }

    /// Runs every KAT against a fresh provider and enters the error state on the first failure.
    fn power_on() -> Provider {
        let p = Provider::untested();
        p.run_self_tests();
        p
    }

    fn run_self_tests(&self) {
        let report = selftest::run_with(self);
        if let Some(failed) = report.iter().find(|r| !r.passed) {
            self.enter_error_state(failed.name);
        }
        let _ = self.report.set(report);
    }

    /// A separate provider with an injected fault, for tests of the error state.
    #[cfg(test)]
    pub(crate) fn with_fault(fault: Fault) -> Provider {
        let mut p = Provider::untested();
        if let Fault::Kat(_) = fault {
            p.fault = Some(fault);
            p.run_self_tests();
        } else {
            // A PCT fault must not trip the KATs (some generate keys), only later generation.
            p.run_self_tests();
            p.fault = Some(fault);
        }
        p
    }

    #[cfg(test)]
    pub(crate) fn kat_fault(&self, name: &str) -> bool {
        matches!(&self.fault, Some(Fault::Kat(n)) if *n == name)
    }

    #[cfg(not(test))]
    #[inline]
    #[allow(clippy::unused_self)] // mirrors the cfg(test) version, which reads `self.fault`
    pub(crate) fn kat_fault(&self, _name: &str) -> bool {
        false
    }

    #[cfg(test)]
    pub(crate) fn pct_fault(&self) -> bool {
        matches!(self.fault, Some(Fault::Pct))
    }

    #[cfg(not(test))]
    #[inline]
    #[allow(clippy::unused_self)] // mirrors the cfg(test) version, which reads `self.fault`
    pub(crate) fn pct_fault(&self) -> bool {
        false
    }

    /// `Ok` unless the module is in the error state.
    ///
    /// # Errors
    /// [`Error::ErrorState`] naming the test that failed.
    #[inline]
    pub fn check(&self) -> Result<()> {
        match self.error.get() {
            None => Ok(()),
            Some(name) => Err(Error::ErrorState(name.clone())),
        }
    }

    /// True once any self-test, PCT or RNG-health check has failed. Sticky for the process.
    pub fn is_error_state(&self) -> bool {
        self.error.get().is_some()
    }

    /// Puts the module in the error state (sticky) and returns the error to hand back.
    pub(crate) fn enter_error_state(&self, what: &str) -> Error {
        if self.error.set(what.to_owned()).is_ok() {
            tracing::error!(test = what, "self-test failed: module enters the error state");
        }
        Error::ErrorState(self.error.get().cloned().unwrap_or_else(|| what.to_owned()))
    }

    /// Fills `out` from the aws-lc DRBG, passing every 16-byte block through the continuous test.
    ///
    /// # Errors
    /// [`Error::ErrorState`] if the module is (or by this call enters) the error state.
    pub fn random(&self, out: &mut [u8]) -> Result<()> {
        self.check()?;
        if out.is_empty() {
            return Ok(());
        }
        let n = out.len().div_ceil(rng::BLOCK) * rng::BLOCK;
        let mut buf = Zeroizing::new(vec![0u8; n]);
        aws_lc_rs::rand::fill(&mut buf).map_err(|_| self.enter_error_state("RNG"))?;
        let healthy = match self.rng.lock() {
            Ok(mut t) => t.check(&buf),
            Err(_) => false,
        };
        if !healthy {
            return Err(self.enter_error_state("RNG continuous test"));
        }
        out.copy_from_slice(&buf[..out.len()]);
        Ok(())
    }

    /// Random bytes as a secret (for key generation).
    pub(crate) fn random_secret(&self, len: usize) -> Result<SecretBytes> {
        let mut s = SecretBytes::zeroed(len);
        self.random(s.expose_secret_mut())?;
        Ok(s)
    }

    /// A one-shot digest.
    ///
    /// # Errors
    /// [`Error::ErrorState`] in the error state.
    pub fn digest(&self, alg: DigestAlg, data: &[u8]) -> Result<Vec<u8>> {
        self.check()?;
        Ok(digest::digest(digest_alg(alg), data).as_ref().to_vec())
    }

    /// Results of the power-on known-answer tests (name, passed, duration).
    pub fn self_test_report(&self) -> Vec<SelfTestResult> {
        self.report.get().cloned().unwrap_or_default()
    }
}

/// A fresh continuous-RNG-test state (for the DRBG health KAT).
pub(crate) fn rng_test_state() -> rng::ContinuousTest {
    rng::ContinuousTest::new()
}

/// The aws-lc-rs digest algorithm for a [`DigestAlg`].
pub(crate) fn digest_alg(alg: DigestAlg) -> &'static digest::Algorithm {
    match alg {
        DigestAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        DigestAlg::Sha224 => &digest::SHA224,
        DigestAlg::Sha256 => &digest::SHA256,
        DigestAlg::Sha384 => &digest::SHA384,
        DigestAlg::Sha512 => &digest::SHA512,
    }
}

/// `OnceLock::get_or_try_init` on stable Rust.
pub(crate) fn get_or_try_init<T>(
    cell: &OnceLock<T>,
    init: impl FnOnce() -> Result<T>,
) -> Result<&T> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = init()?;
    let _ = cell.set(v);
    cell.get().ok_or(Error::Internal("lazy key init"))
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Provider>();
    assert_send_sync::<LoadedKey>();
    assert_send_sync::<LoadedPublicKey>();
    assert_send_sync::<PublicKey>();
    assert_send_sync::<KeyMaterial>();
};

#[cfg(test)]
mod tests;
