//! The TLS layer of a session, sans I/O: rustls's `Connection` between the
//! PROXY header and the HMAC handshake (see [`crate::proto::session`]).
//! Wire bytes go in ([`Tls::receive`]), decrypted bytes land in a
//! [`RecvBuffer`] of its own that frames are decoded from; plaintext goes
//! out through a [`Sealer`], which writes TLS records into the caller's
//! buffer. The sealer shares the rustls state behind a mutex so that a
//! blocking connection can send on one thread while another receives; the
//! lock is only held while bytes are encrypted or decrypted, never while a
//! socket is waited on.
//!
//! After the handshake only what an application asks for is kept of the
//! peer's certificate ([`PeerCert`]: its SHA-256 fingerprint and subject).

use std::io::{IoSlice, Read, Write};
use std::sync::{Arc, Mutex};

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, ServerConfig};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::proto::recv_buffer::RecvBuffer;
use crate::util::sync::lock;

/// Wire bytes handed to rustls before its records are processed: its
/// deframer takes 4 KiB a call and holds one record (up to ~16 KiB).
const FEED_PER_ROUND: usize = 16 * 1024 + 512;

/// What a session needs to speak TLS: the configuration, built once per
/// server or connect (not per connection), and for a client the name the
/// server's certificate must carry.
#[derive(Clone, Debug)]
pub enum TlsParams {
    /// The accepting side.
    Server(Arc<ServerConfig>),
    /// The connecting side, checking the server's certificate for the name.
    Client(Arc<ClientConfig>, ServerName<'static>),
}

/// The peer's certificate, as much of it as is kept after the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    /// SHA-256 of the certificate's DER encoding.
    pub sha256: [u8; 32],
    /// The subject, RFC 4514 style ("CN=client,O=Example").
    pub subject: String,
}

/// What was negotiated, known once the TLS handshake is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version: 0x0304 for TLS 1.3, 0x0303 for TLS 1.2.
    pub version: u16,
    /// The ALPN protocol agreed on, if any.
    pub alpn: Option<Vec<u8>>,
    /// The peer's certificate (none from a client that sent none).
    pub peer_cert: Option<PeerCert>,
}

/// Encrypts plaintext into TLS records; shared with the session it came
/// from (see the module docs).
#[derive(Clone)]
pub struct Sealer(Arc<Mutex<rustls::Connection>>);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    /// Encrypts `parts` (one run of plaintext: many frames fill each
    /// record) and appends the records, with any TLS message rustls still
    /// had to send, to `out`.
    pub fn seal(&self, parts: &[IoSlice<'_>], out: &mut Vec<u8>) -> Result<()> {
        let mut conn = lock(&self.0);
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0;
        loop {
            // rustls accepts up to its buffer limit (64 KiB) a call: move
            // what it encrypted out and give it the rest.
            if done < total {
                let n = if done == 0 {
                    conn.writer().write_vectored(parts)
                } else {
                    // Past rustls's limit (a large frame): the rest.
                    conn.writer().write_vectored(&skip(parts, done))
                };
                let n = n.map_err(|e| broken_by(&e))?;
                if n == 0 && !conn.wants_write() {
                    // Nothing taken and nothing to drain: rustls holds
                    // plaintext it cannot send yet (no handshake done).
                    return Err(Error::new(
                        ErrorKind::InvalidState,
                        "the TLS session cannot take more data before its handshake is done",
                    ));
                }
                done += n;
            }
            write_tls(&mut conn, out);
            if done == total {
                return Ok(());
            }
        }
    }

    /// Appends the TLS messages rustls has to send (a close_notify, a key
    /// update) to `out`.
    pub fn flush(&self, out: &mut Vec<u8>) {
        write_tls(&mut lock(&self.0), out);
    }

    /// Queues a close_notify and appends it to `out`: a clean end the peer
    /// can tell from a cut connection.
    pub fn close_notify(&self, out: &mut Vec<u8>) {
        let mut conn = lock(&self.0);
        conn.send_close_notify();
        write_tls(&mut conn, out);
    }
}

/// The slices of `parts` after the first `done` bytes.
fn skip<'a>(parts: &'a [IoSlice<'a>], mut done: usize) -> Vec<IoSlice<'a>> {
    let mut rest = Vec::with_capacity(parts.len());
    for p in parts {
        if done >= p.len() {
            done -= p.len();
            continue;
        }
        rest.push(IoSlice::new(&p[done..]));
        done = 0;
    }
    rest
}

fn write_tls(conn: &mut rustls::Connection, out: &mut Vec<u8>) {
    while conn.wants_write() {
        // Writing to a Vec cannot fail.
        if conn.write_tls(out).unwrap_or(0) == 0 {
            break;
        }
    }
}

fn broken_by(e: &std::io::Error) -> Error {
    Error::new(
        ErrorKind::Broken,
        format!("the TLS session failed earlier, nothing more can be sent: {e}"),
    )
}

/// One connection's TLS state and its decrypted bytes.
pub struct Tls {
    /// The rustls connection, shared with the drivers' sending side.
    sealer: Sealer,
    /// Decrypted bytes not yet taken as frames.
    pub(crate) plain: RecvBuffer,
    /// The first wire byte seen: tells "not TLS at all" from a bad record.
    first_byte: Option<u8>,
    info: Option<TlsInfo>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("info", &self.info).finish()
    }
}

impl Tls {
    /// A TLS connection in `params`' role; a client's first message
    /// (ClientHello) is ready in [`Tls::write_tls`].
    pub fn new(params: &TlsParams) -> Result<Tls> {
        let conn: rustls::Connection = match params {
            TlsParams::Server(config) => rustls::ServerConnection::new(config.clone())
                .map_err(|e| tls_error(&e, None))?
                .into(),
            TlsParams::Client(config, name) => {
                rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| tls_error(&e, None))?
                    .into()
            }
        };
        Ok(Tls {
            sealer: Sealer(Arc::new(Mutex::new(conn))),
            plain: RecvBuffer::default(),
            first_byte: None,
            info: None,
        })
    }

    /// The sealer of this connection's outgoing records.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Feeds every byte of `wire` to rustls (consuming them) and appends
    /// what they decrypt to [`Tls::plain`]. An error is fatal: rustls then
    /// has an alert for the peer in [`Tls::write_tls`].
    pub fn receive(&mut self, wire: &mut RecvBuffer) -> Result<()> {
        if self.first_byte.is_none() {
            self.first_byte = wire.pending().first().copied();
        }
        let mut conn = lock(&self.sealer.0);
        while !wire.pending().is_empty() {
            let mut rd: &[u8] = wire.pending();
            let before = rd.len();
            while !rd.is_empty() && before - rd.len() < FEED_PER_ROUND {
                match conn.read_tls(&mut rd) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let fed = before - rd.len();
            wire.consume(fed);
            let state = match conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => return Err(tls_error(&e, self.first_byte)),
            };
            let mut n = state.plaintext_bytes_to_read();
            while n > 0 {
                let spare = self.plain.spare(n);
                let got = conn.reader().read(&mut spare[..n]).unwrap_or(0);
                if got == 0 {
                    break;
                }
                self.plain.commit(got);
                n -= got;
            }
            if fed == 0 {
                // rustls took nothing (it holds a full record it could not
                // process): the rest waits for the next call.
                break;
            }
        }
        Ok(())
    }

    /// Whether the TLS handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        lock(&self.sealer.0).is_handshaking()
    }

    /// Appends the TLS messages rustls has to send to `out`.
    pub fn write_tls(&self, out: &mut Vec<u8>) {
        write_tls(&mut lock(&self.sealer.0), out);
    }

    /// Records what the finished handshake negotiated (and the peer's
    /// certificate, reduced to what [`PeerCert`] keeps).
    pub fn finish_handshake(&mut self) -> &TlsInfo {
        let conn = lock(&self.sealer.0);
        let version = conn.protocol_version().map_or(0, u16::from);
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let peer_cert = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| PeerCert {
                sha256: Sha256::digest(cert.as_ref()).into(),
                subject: subject_of(cert.as_ref()).unwrap_or_default(),
            });
        drop(conn);
        self.info.insert(TlsInfo {
            version,
            alpn,
            peer_cert,
        })
    }

    /// What the handshake negotiated, once it is done.
    pub fn info(&self) -> Option<&TlsInfo> {
        self.info.as_ref()
    }
}

/// Whether `bytes` start like a TLS record (handshake, alert or data): a
/// plaintext end uses it to say that its peer speaks TLS.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15..=0x17, 0x03, 0x00..=0x04, ..])
}

/// A rustls failure as sockserv's error: [`ErrorKind::Certificate`] for a
/// refused certificate (ours or the peer's), [`ErrorKind::Tls`] for the
/// rest. `first_byte` is the first byte the peer sent.
pub fn tls_error(e: &rustls::Error, first_byte: Option<u8>) -> Error {
    use rustls::Error as E;
    let cert = |detail: String| Error::new(ErrorKind::Certificate, detail);
    let tls = |detail: String| Error::new(ErrorKind::Tls, detail);
    match e {
        E::InvalidCertificate(c) => cert(format!("certificate verify failed: {}", cert_reason(c))),
        E::NoCertificatesPresented => {
            cert("the client sent no certificate, which this server requires".into())
        }
        E::AlertReceived(alert) => alert_error(*alert),
        E::InvalidMessage(_) | E::PeerSentOversizedRecord
            if first_byte.is_some_and(|b| !(0x14..=0x17).contains(&b)) =>
        {
            tls("not TLS: the peer sent bytes that are no TLS record (a plaintext peer on a tls:// address?)".into())
        }
        E::DecryptError => tls(
            "a record failed its integrity check (bad record MAC): it was corrupted or forged on the way"
                .into(),
        ),
        E::NoApplicationProtocol => tls("no ALPN protocol in common with the peer".into()),
        E::PeerIncompatible(p) => tls(format!("nothing in common with the peer: {p:?}")),
        E::PeerMisbehaved(p) => tls(format!("the peer broke the TLS protocol: {p:?}")),
        E::InvalidMessage(m) => tls(format!("a malformed TLS message: {m:?}")),
        other => tls(format!("TLS failed: {other}")),
    }
}

/// A name the certificate presents, as rustls spells it (`DnsName("a.b")`,
/// `IpAddress(1.2.3.4)`), without the wrapping: `a.b`, `1.2.3.4`.
fn bare_name(presented: &str) -> &str {
    let inner = presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(presented);
    inner.trim_matches('"')
}

fn cert_reason(c: &CertificateError) -> String {
    use CertificateError as C;
    match c {
        C::UnknownIssuer => "unknown issuer (not signed by a trusted CA)".into(),
        C::Expired | C::ExpiredContext { .. } => "expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "not yet valid".into(),
        C::NotValidForName => "name mismatch".into(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "name mismatch (wanted {}, the certificate is for {})",
            expected.to_str(),
            presented
                .iter()
                .map(|p| bare_name(p))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        C::BadSignature => "bad signature".into(),
        C::BadEncoding => "the certificate cannot be decoded".into(),
        C::Revoked => "revoked".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "not valid for this purpose (server or client authentication)".into()
        }
        other => format!("{other:?}"),
    }
}

fn alert_error(alert: AlertDescription) -> Error {
    use AlertDescription as A;
    let (kind, what) = match alert {
        A::UnknownCA => (
            ErrorKind::Certificate,
            "the peer does not trust our certificate: unknown CA",
        ),
        A::CertificateExpired => (
            ErrorKind::Certificate,
            "the peer refused our certificate: expired",
        ),
        A::CertificateRequired => (
            ErrorKind::Certificate,
            "the peer requires a client certificate and we sent none",
        ),
        A::BadCertificate
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateUnknown
        | A::AccessDenied => (
            ErrorKind::Certificate,
            "the peer refused our certificate (or its name)",
        ),
        A::BadRecordMac => (
            ErrorKind::Tls,
            "the peer could not authenticate a record (bad_record_mac)",
        ),
        A::DecodeError => (
            ErrorKind::Tls,
            "the peer could not decode our TLS messages (decode_error)",
        ),
        A::ProtocolVersion => (ErrorKind::Tls, "no TLS version in common with the peer"),
        A::HandshakeFailure | A::InsufficientSecurity => (
            ErrorKind::Tls,
            "no cipher suite or parameters in common with the peer",
        ),
        A::NoApplicationProtocol => (ErrorKind::Tls, "no ALPN protocol in common with the peer"),
        _ => (ErrorKind::Tls, "the peer ended the TLS session"),
    };
    Error::new(kind, format!("{what} ({alert:?} alert received)"))
}

/// The subject of a DER certificate, RFC 4514 style: the relative names
/// last to first, "CN=client,O=Example". A small DER walk: only the
/// fields before the subject are stepped over.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (cert, _) = tlv(der, 0x30)?;
    let (mut tbs, _) = tlv(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs, 0xa0)?.1; // version
    }
    for tag in [0x02, 0x30, 0x30, 0x30] {
        tbs = tlv(tbs, tag)?.1; // serial, signature algorithm, issuer, validity
    }
    let (mut name, _) = tlv(tbs, 0x30)?;
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (mut set, rest) = tlv(name, 0x31)?;
        name = rest;
        let mut rdn = Vec::new();
        while !set.is_empty() {
            let (atv, rest) = tlv(set, 0x30)?;
            set = rest;
            let (oid, value) = tlv(atv, 0x06)?;
            let (tag, text, _) = any_tlv(value)?;
            rdn.push(format!(
                "{}={}",
                attribute_name(oid),
                escape(&string_of(tag, text))
            ));
        }
        parts.push(rdn.join("+"));
    }
    parts.reverse();
    Some(parts.join(","))
}

/// The contents of the DER element at the start of `der` if its tag is
/// `tag`, and what follows it.
fn tlv(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = any_tlv(der)?;
    (t == tag).then_some((body, rest))
}

fn any_tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, der) = der.split_first()?;
    let (&first, mut der) = der.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || der.len() < n {
            return None;
        }
        let len = der[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | *b as usize);
        der = &der[n..];
        len
    };
    (der.len() >= len).then(|| (tag, &der[..len], &der[len..]))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x09] => "STREET".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x55, 0x04, 0x05] => "serialNumber".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID".into(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
        _ => dotted(oid),
    }
}

/// An OID in dotted form ("1.2.3"), for attributes without a short name.
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for b in oid {
        value = value << 7 | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    let text: Vec<String> = arcs.iter().map(u64::to_string).collect();
    text.join(".")
}

fn string_of(tag: u8, bytes: &[u8]) -> String {
    match tag {
        // BMPString: UCS-2, big-endian.
        0x1e => char::decode_utf16(
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// RFC 4514's escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_lose_rustls_spelling() {
        assert_eq!(bare_name("DnsName(\"example.org\")"), "example.org");
        assert_eq!(bare_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(bare_name("plain"), "plain");
    }

    #[test]
    fn subjects_read_last_relative_name_first_and_escaped() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x.example".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "NL");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_of(cert.der()).unwrap(),
            "CN=client,O=Example\\, Inc.,C=NL"
        );
        // Garbage is no subject, and no panic.
        assert_eq!(subject_of(&[0x30, 0x03, 0x02, 0x01]), None);
        assert_eq!(subject_of(&[]), None);
    }

    #[test]
    fn oids_without_a_short_name_are_dotted() {
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
        assert_eq!(attribute_name(&[0x55, 0x04, 0x03]), "CN");
    }

    #[test]
    fn tls_records_are_recognised() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(looks_like_tls(&[0x15, 0x03, 0x03]));
        assert!(!looks_like_tls(&[0x00, 0x00, 0x00, 0x05]));
        assert!(!looks_like_tls(b"PROXY TCP4"));
    }
}
