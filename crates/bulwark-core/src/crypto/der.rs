//! A deliberately small, strict DER reader and writer for the few structures the engine handles
//! itself: `SubjectPublicKeyInfo`, PKCS#8 `PrivateKeyInfo` headers, `DigestInfo`, ECDSA
//! `Ecdsa-Sig-Value` and OCTET STRING wrappers.
//!
//! Every parser here reads untrusted input: it never panics, rejects indefinite and non-minimal
//! lengths, and returns `None` on anything it does not fully understand. It never sees secret
//! bytes except as opaque slices that it neither logs nor copies.

/// DER tags used here.
pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;

/// OID contents (without tag and length).
pub(crate) mod oid {
    pub(crate) const RSA_ENCRYPTION: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    pub(crate) const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    pub(crate) const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    pub(crate) const X25519: &[u8] = &[0x2b, 0x65, 0x6e];
    /// 2.16.840.1.101.3.4.3.{17,18,19} (FIPS 204 / RFC 9881).
    pub(crate) const ML_DSA_44: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x11];
    pub(crate) const ML_DSA_65: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12];
    pub(crate) const ML_DSA_87: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x13];
    /// 2.16.840.1.101.3.4.4.{1,2,3} (FIPS 203).
    pub(crate) const ML_KEM_512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x01];
    pub(crate) const ML_KEM_768: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x02];
    pub(crate) const ML_KEM_1024: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x04, 0x03];
}

/// A cursor over DER bytes.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Reads one TLV with a single-byte tag; returns (tag, content, whole TLV).
    pub(crate) fn read_any(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let (&tag, rest) = self.data.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // multi-byte tags are never needed here
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None; // indefinite or absurd
            }
            let (len_bytes, rest) = rest.split_at(n);
            if len_bytes[0] == 0 {
                return None; // non-minimal
            }
            let len = len_bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            if len < 0x80 {
                return None; // long form for a short length
            }
            (len, rest)
        };
        if rest.len() < len {
            return None;
        }
        let header = self.data.len() - rest.len();
        let whole = &self.data[..header + len];
        let (content, rest) = rest.split_at(len);
        self.data = rest;
        Some((tag, content, whole))
    }

    /// Reads one TLV that must carry `tag`; returns its content.
    pub(crate) fn read(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.read_any()? {
            (t, content, _) if t == tag => Some(content),
            _ => None,
        }
    }
}

/// Parses `data` as exactly one TLV with `tag` and nothing after it.
pub(crate) fn read_single(data: &[u8], tag: u8) -> Option<&[u8]> {
    let mut r = Reader::new(data);
    let content = r.read(tag)?;
    r.is_empty().then_some(content)
}

/// Appends a TLV.
pub(crate) fn write_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

/// One TLV as a new vector.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(content.len() + 6);
    write_tlv(&mut v, tag, content);
    v
}

/// Strips leading zero bytes (for big-endian unsigned values).
pub(crate) fn strip_zeros(v: &[u8]) -> &[u8] {
    let skip = v.iter().take_while(|&&b| b == 0).count();
    &v[skip..]
}

/// Appends a non-negative INTEGER from big-endian magnitude bytes.
pub(crate) fn write_uint(out: &mut Vec<u8>, be: &[u8]) {
    let v = strip_zeros(be);
    let mut content = Vec::with_capacity(v.len() + 1);
    if v.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(v);
    write_tlv(out, INTEGER, &content);
}

/// Reads a non-negative, minimally encoded INTEGER; returns its magnitude without leading zeros.
pub(crate) fn read_uint<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    let c = r.read(INTEGER)?;
    match c {
        [] => None,
        [b, ..] if b & 0x80 != 0 => None,
        [0, b, ..] if b & 0x80 == 0 => None,
        [0, rest @ ..] => Some(rest),
        _ => Some(c),
    }
}

/// (algorithm OID content, parameters TLV if any, key bytes).
pub(crate) type AlgorithmAndKey<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// Builds a `SubjectPublicKeyInfo` from an `AlgorithmIdentifier`'s content and the key bits.
pub(crate) fn spki(algorithm_oid: &[u8], params: Option<&[u8]>, key: &[u8]) -> Vec<u8> {
    let mut alg = tlv(OID, algorithm_oid);
    if let Some(p) = params {
        alg.extend_from_slice(p);
    }
    let mut bits = Vec::with_capacity(key.len() + 1);
    bits.push(0);
    bits.extend_from_slice(key);
    let mut body = tlv(SEQUENCE, &alg);
    write_tlv(&mut body, BIT_STRING, &bits);
    tlv(SEQUENCE, &body)
}

/// A parsed `SubjectPublicKeyInfo`: (algorithm OID content, parameters TLV if any, key bits).
pub(crate) fn parse_spki(der: &[u8]) -> Option<AlgorithmAndKey<'_>> {
    let mut outer = Reader::new(read_single(der, SEQUENCE)?);
    let mut alg = Reader::new(outer.read(SEQUENCE)?);
    let bits = outer.read(BIT_STRING)?;
    if !outer.is_empty() {
        return None;
    }
    let oid = alg.read(OID)?;
    let params = if alg.is_empty() { None } else { Some(alg.read_any()?.2) };
    if !alg.is_empty() {
        return None;
    }
    match bits.split_first()? {
        (0, key) => Some((oid, params, key)),
        _ => None,
    }
}

/// The header of a PKCS#8 `PrivateKeyInfo` / `OneAsymmetricKey`: (algorithm OID content,
/// parameters TLV if any, privateKey OCTET STRING content).
pub(crate) fn parse_pkcs8(der: &[u8]) -> Option<AlgorithmAndKey<'_>> {
    let mut outer = Reader::new(read_single(der, SEQUENCE)?);
    let version = outer.read(INTEGER)?;
    if version != [0] && version != [1] {
        return None;
    }
    let mut alg = Reader::new(outer.read(SEQUENCE)?);
    let oid = alg.read(OID)?;
    let params = if alg.is_empty() { None } else { Some(alg.read_any()?.2) };
    let key = outer.read(OCTET_STRING)?;
    Some((oid, params, key))
}

/// A PKCS#8 v1 document for a key whose privateKey is `OCTET STRING { raw }` and whose
/// `AlgorithmIdentifier` has no parameters (RFC 8410: X25519, Ed25519).
pub(crate) fn pkcs8_curve25519(algorithm_oid: &[u8], raw: &[u8]) -> Vec<u8> {
    let mut body = tlv(INTEGER, &[0]);
    write_tlv(&mut body, SEQUENCE, &tlv(OID, algorithm_oid));
    write_tlv(&mut body, OCTET_STRING, &tlv(OCTET_STRING, raw));
    tlv(SEQUENCE, &body)
}

/// The DER `DigestInfo` prefixes of RFC 8017 §9.2 note 1, followed by the digest.
const DIGEST_INFO_PREFIXES: [(usize, &[u8]); 3] = [
    (
        32,
        &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
    ),
    (
        48,
        &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
    ),
    (
        64,
        &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    ),
];

/// Splits a SHA-256/384/512 `DigestInfo` into (digest length, digest).
#[cfg(test)]
pub(crate) fn parse_digest_info(data: &[u8]) -> Option<(usize, &[u8])> {
    DIGEST_INFO_PREFIXES.iter().find_map(|(len, prefix)| {
        let digest = data.strip_prefix(*prefix)?;
        (digest.len() == *len).then_some((*len, digest))
    })
}

/// Builds the `DigestInfo` for a SHA-256/384/512 digest.
pub(crate) fn digest_info(digest: &[u8]) -> Option<Vec<u8>> {
    let (_, prefix) = DIGEST_INFO_PREFIXES.iter().find(|(len, _)| *len == digest.len())?;
    let mut v = prefix.to_vec();
    v.extend_from_slice(digest);
    Some(v)
}

/// `r || s` (each `field_len` bytes) to a DER `Ecdsa-Sig-Value`.
pub(crate) fn ecdsa_raw_to_der(field_len: usize, raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 2 * field_len {
        return None;
    }
    let (r, s) = raw.split_at(field_len);
    let mut body = Vec::with_capacity(raw.len() + 6);
    write_uint(&mut body, r);
    write_uint(&mut body, s);
    Some(tlv(SEQUENCE, &body))
}

/// A strict DER `Ecdsa-Sig-Value` to `r || s` (each left-padded to `field_len`).
pub(crate) fn ecdsa_der_to_raw(field_len: usize, der: &[u8]) -> Option<Vec<u8>> {
    let mut seq = Reader::new(read_single(der, SEQUENCE)?);
    let r = read_uint(&mut seq)?;
    let s = read_uint(&mut seq)?;
    if !seq.is_empty() || r.len() > field_len || s.len() > field_len {
        return None;
    }
    let mut out = vec![0u8; 2 * field_len];
    out[field_len - r.len()..field_len].copy_from_slice(r);
    out[2 * field_len - s.len()..].copy_from_slice(s);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_strict() {
        assert_eq!(read_single(&[0x04, 0x01, 0xaa], OCTET_STRING), Some(&[0xaa][..]));
        assert!(read_single(&[0x04, 0x81, 0x01, 0xaa], OCTET_STRING).is_none()); // non-minimal
        assert!(read_single(&[0x04, 0x80, 0xaa, 0, 0], OCTET_STRING).is_none()); // indefinite
        assert!(read_single(&[0x04, 0x02, 0xaa], OCTET_STRING).is_none()); // short
        assert!(read_single(&[0x04, 0x01, 0xaa, 0x00], OCTET_STRING).is_none()); // trailing
        let long = tlv(OCTET_STRING, &[7u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(read_single(&long, OCTET_STRING).map(<[u8]>::len), Some(300));
    }

    #[test]
    fn integers_are_minimal_and_non_negative() {
        let mut v = Vec::new();
        write_uint(&mut v, &[0, 0, 0x80, 1]);
        assert_eq!(v, [0x02, 0x03, 0x00, 0x80, 0x01]);
        assert_eq!(read_uint(&mut Reader::new(&v)), Some(&[0x80, 0x01][..]));
        assert!(read_uint(&mut Reader::new(&[0x02, 0x01, 0x80])).is_none()); // negative
        assert!(read_uint(&mut Reader::new(&[0x02, 0x02, 0x00, 0x01])).is_none()); // padded
        assert!(read_uint(&mut Reader::new(&[0x02, 0x00])).is_none()); // empty
    }

    #[test]
    fn ecdsa_signature_round_trip_and_rejects() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80;
        raw[63] = 1;
        let der = ecdsa_raw_to_der(32, &raw).unwrap();
        assert_eq!(ecdsa_der_to_raw(32, &der).unwrap(), raw);
        let mut tampered = der.clone();
        tampered.push(0);
        assert!(ecdsa_der_to_raw(32, &tampered).is_none());
        assert!(ecdsa_der_to_raw(31, &der).is_none());
        assert!(ecdsa_raw_to_der(32, &raw[1..]).is_none());
    }

    #[test]
    fn digest_info_round_trip() {
        let d = [0x11u8; 48];
        let di = digest_info(&d).unwrap();
        assert_eq!(parse_digest_info(&di), Some((48, &d[..])));
        assert!(parse_digest_info(&di[..di.len() - 1]).is_none());
        assert!(digest_info(&[0u8; 20]).is_none());
    }

    #[test]
    fn spki_round_trip() {
        let der = spki(oid::ED25519, None, &[9u8; 32]);
        let (o, p, k) = parse_spki(&der).unwrap();
        assert_eq!((o, p, k), (oid::ED25519, None, &[9u8; 32][..]));
        let mut bad = der.clone();
        let n = bad.len();
        bad[n - 33] = 1; // unused-bits byte
        assert!(parse_spki(&bad).is_none());
    }
}
