//! HMAC with the digests the handshake accepts. Verification goes through
//! `Mac::verify_slice`, which checks the length and then compares in
//! constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha384};
use sha3::{Sha3_256, Sha3_384};

/// The digests sockserv speaks; each is named on the wire as `{name}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
    /// HMAC-SHA3-256, `{sha3_256}`: offered by Python 3.12+
    /// (`multiprocessing.connection` accepts it in both roles).
    Sha3_256,
    /// HMAC-SHA3-384, `{sha3_384}`: likewise.
    Sha3_384,
}

impl Digest {
    /// The name between the braces of the wire tag.
    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha3_256 => "sha3_256",
            Digest::Sha3_384 => "sha3_384",
        }
    }

    /// The digest a `{name}` prefix names, if one we speak.
    pub fn from_name(name: &[u8]) -> Option<Digest> {
        match name {
            b"sha256" => Some(Digest::Sha256),
            b"sha384" => Some(Digest::Sha384),
            b"sha3_256" => Some(Digest::Sha3_256),
            b"sha3_384" => Some(Digest::Sha3_384),
            _ => None,
        }
    }

    /// HMAC of `msg` under `key` with this digest.
    pub fn mac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        match self {
            Digest::Sha256 => hmac_sha256(key, msg).to_vec(),
            Digest::Sha384 => keyed::<Hmac<Sha384>>(key, msg)
                .finalize()
                .into_bytes()
                .to_vec(),
            Digest::Sha3_256 => keyed::<Hmac<Sha3_256>>(key, msg)
                .finalize()
                .into_bytes()
                .to_vec(),
            Digest::Sha3_384 => keyed::<Hmac<Sha3_384>>(key, msg)
                .finalize()
                .into_bytes()
                .to_vec(),
        }
    }

    /// Whether `tag` is the HMAC of `msg` under `key`, in constant time.
    pub fn verify(self, key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
        match self {
            Digest::Sha256 => verify_hmac_sha256(key, msg, tag),
            Digest::Sha384 => keyed::<Hmac<Sha384>>(key, msg).verify_slice(tag).is_ok(),
            Digest::Sha3_256 => keyed::<Hmac<Sha3_256>>(key, msg).verify_slice(tag).is_ok(),
            Digest::Sha3_384 => keyed::<Hmac<Sha3_384>>(key, msg).verify_slice(tag).is_ok(),
        }
    }
}

/// A MAC of type `M` keyed with `key` that has seen `msg`.
fn keyed<M: Mac + KeyInit>(key: &[u8], msg: &[u8]) -> M {
    let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m
}

/// HMAC-SHA256(`key`, `msg`).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// Whether `tag` is the HMAC-SHA256 of `msg` under `key`: the length is
/// checked first, then the bytes are compared in constant time.
pub fn verify_hmac_sha256(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.verify_slice(tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // RFC 4231, test case 2.
    #[test]
    fn rfc4231_case_2() {
        let key = b"Jefe";
        let msg = b"what do ya want for nothing?";
        assert_eq!(
            hex(&hmac_sha256(key, msg)),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&Digest::Sha384.mac(key, msg)),
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
             8e2240ca5e69e2c78b3239ecfab21649"
        );
    }

    // The same inputs through Python's hmac module (OpenSSL's SHA3).
    #[test]
    fn sha3_tags_match_pythons() {
        let key = b"Jefe";
        let msg = b"what do ya want for nothing?";
        assert_eq!(
            hex(&Digest::Sha3_256.mac(key, msg)),
            "c7d4072e788877ae3596bbb0da73b887c9171f93095b294ae857fbe2645e1ba5"
        );
        assert_eq!(
            hex(&Digest::Sha3_384.mac(key, msg)),
            "f1101f8cbf9766fd6764d2ed61903f21ca9b18f57cf3e1a23ca13508a93243ce\
             48c045dc007f26a21b3f5e0e9df4c20a"
        );
        for d in [Digest::Sha3_256, Digest::Sha3_384] {
            let tag = d.mac(key, msg);
            assert!(d.verify(key, msg, &tag));
            assert!(!d.verify(key, msg, &tag[1..]));
            assert!(!d.verify(b"other", msg, &tag));
            assert_eq!(Digest::from_name(d.name().as_bytes()), Some(d));
        }
    }

    #[test]
    fn verify_checks_length_and_bytes() {
        let tag = hmac_sha256(b"k", b"m");
        assert!(verify_hmac_sha256(b"k", b"m", &tag));
        assert!(!verify_hmac_sha256(b"k", b"m", &tag[..31]));
        assert!(!verify_hmac_sha256(b"other", b"m", &tag));
        let mut tampered = tag;
        tampered[31] ^= 1;
        assert!(!verify_hmac_sha256(b"k", b"m", &tampered));
    }
}
