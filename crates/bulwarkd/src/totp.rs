//! TOTP (RFC 6238) through the crypto provider (aws-lc-rs HMAC), so that the FIPS build covers
//! the second factor too; the `totp-rs` crate computes its own HMAC outside the provider.
//!
//! Parameters are the authenticator-app defaults the daemon enrols users with: HMAC-SHA1, six
//! digits, 30-second steps, one step of clock skew either way. [`check`] returns the step that
//! matched so the caller can refuse a replayed code (RFC 6238 §5.2: accept each step once).
//! The code comparison is constant-time.

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq as _;

/// Step length in seconds.
pub const STEP: u64 = 30;
/// Digits in a code.
pub const DIGITS: u32 = 6;
/// Steps of clock skew accepted on each side of the current one.
pub const SKEW: u64 = 1;

/// The HMAC of a TOTP secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// HMAC-SHA1 (what authenticator apps use by default).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Alg {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Alg::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Alg::Sha256 => hmac::HMAC_SHA256,
            Alg::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// The HOTP value (RFC 4226 §5.3, dynamic truncation) of `secret` for `counter`, `digits` long.
pub fn hotp(alg: Alg, secret: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(alg.hmac(), secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([mac[offset], mac[offset + 1], mac[offset + 2], mac[offset + 3]])
        & 0x7fff_ffff;
    bin % 10u32.pow(digits)
}

/// The TOTP code of `secret` at Unix time `time`, zero-padded to `digits`.
pub fn code_at(alg: Alg, secret: &[u8], time: u64, digits: u32) -> String {
    format!("{:0width$}", hotp(alg, secret, time / STEP, digits), width = digits as usize)
}

/// The step (counter) that `otp` matches for `secret` at Unix time `now`, within [`SKEW`]
/// steps; None when it matches none or is not a [`DIGITS`]-digit code. HMAC-SHA1.
pub fn check(secret: &[u8], otp: &str, now: u64) -> Option<u64> {
    if otp.len() != DIGITS as usize || !otp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let origin = now / STEP;
    let mut found = None;
    // Every candidate is computed and compared, matched or not, so the time taken does not
    // depend on which step (if any) matched.
    for counter in origin.saturating_sub(SKEW)..=origin + SKEW {
        let want = format!("{:06}", hotp(Alg::Sha1, secret, counter, DIGITS));
        if bool::from(want.as_bytes().ct_eq(otp.as_bytes())) && found.is_none() {
            found = Some(counter);
        }
    }
    found
}

/// [`check`] at the current system time.
pub fn check_current(secret: &[u8], otp: &str) -> Option<u64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    check(secret, otp, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: the seeds are the ASCII digits "1234567890" repeated to 20, 32 and
    /// 64 bytes; 8-digit codes.
    #[test]
    fn rfc_6238_test_vectors() {
        let seed = |n: usize| b"1234567890".iter().copied().cycle().take(n).collect::<Vec<u8>>();
        let vectors: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        for (t, sha1, sha256, sha512) in vectors {
            assert_eq!(code_at(Alg::Sha1, &seed(20), t, 8), sha1, "SHA1 at {t}");
            assert_eq!(code_at(Alg::Sha256, &seed(32), t, 8), sha256, "SHA256 at {t}");
            assert_eq!(code_at(Alg::Sha512, &seed(64), t, 8), sha512, "SHA512 at {t}");
        }
    }

    #[test]
    fn check_accepts_one_step_of_skew_and_returns_the_step() {
        let secret = b"12345678901234567890";
        let t = 1_111_111_111;
        let now = code_at(Alg::Sha1, secret, t, 6);
        assert_eq!(check(secret, &now, t), Some(t / STEP));
        let prev = code_at(Alg::Sha1, secret, t - STEP, 6);
        assert_eq!(check(secret, &prev, t), Some(t / STEP - 1));
        let next = code_at(Alg::Sha1, secret, t + STEP, 6);
        assert_eq!(check(secret, &next, t), Some(t / STEP + 1));
        let old = code_at(Alg::Sha1, secret, t - 2 * STEP, 6);
        assert_eq!(check(secret, &old, t), None);
        // Malformed codes are refused before any HMAC.
        for bad in ["", "12345", "1234567", "12345a", " 123456"] {
            assert_eq!(check(secret, bad, t), None, "{bad:?}");
        }
        // A tampered twin of a good code fails.
        let mut twin = now.into_bytes();
        twin[5] = if twin[5] == b'9' { b'0' } else { twin[5] + 1 };
        assert_eq!(check(secret, std::str::from_utf8(&twin).unwrap(), t), None);
    }

    /// Agrees with the `totp-rs` crate (the implementation it replaces) on random secrets and
    /// times.
    #[test]
    fn agrees_with_totp_rs() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        for _ in 0..200 {
            let mut secret = [0u8; 20];
            let mut t = [0u8; 4];
            aws_lc_rs::rand::SecureRandom::fill(&rng, &mut secret).unwrap();
            aws_lc_rs::rand::SecureRandom::fill(&rng, &mut t).unwrap();
            let time = u64::from(u32::from_le_bytes(t));
            let theirs = totp_rs::Builder::new().with_secret(secret.to_vec()).build().unwrap();
            let code = theirs.generate(time);
            assert_eq!(code_at(Alg::Sha1, &secret, time, 6), code.to_string());
            assert_eq!(
                check(&secret, &code.to_string(), time),
                theirs.check(&code.to_string(), time)
            );
        }
    }
}
