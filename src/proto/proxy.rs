//! The PROXY protocol (versions 1 and 2, from HAProxy's published spec): a
//! header a load balancer sends before the client's bytes, naming the
//! client's real address. A parser only, no I/O.
//!
//! Detection is unambiguous for sockserv: a frame starting with `PROX` or
//! with v2's `\r\n\r\n` would declare a length of over 200 MB, more than any
//! handshake frame (256 bytes) or default maximum frame.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{Error, ErrorKind, Result};

const V1_PREFIX: &[u8] = b"PROXY ";
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;

/// Whether a server expects the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// No PROXY header expected.
    Off,
    /// Read it when the connection starts with one.
    Optional,
    /// Refuse connections that do not start with one.
    Required,
}

#[derive(Debug, PartialEq, Eq)]
/// What parsing the start of a stream as a PROXY header found.
pub enum Parsed {
    /// Not enough bytes to decide.
    NeedMore,
    /// The bytes do not start with a PROXY header.
    Absent,
    /// A header of `len` bytes. `source` is the client's address; `None`
    /// for v1 `UNKNOWN` and v2 `LOCAL` (the proxy's own health checks) or
    /// address families without one: the socket's peer stands.
    Header {
        /// Bytes the header took.
        len: usize,
        /// The client's address it names (`None` for LOCAL or UNKNOWN).
        source: Option<SocketAddr>,
    },
}

/// Looks for a PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed> {
    if starts_like(buf, V1_PREFIX) {
        return if buf.len() < V1_PREFIX.len() {
            Ok(Parsed::NeedMore)
        } else {
            parse_v1(buf)
        };
    }
    if starts_like(buf, V2_SIGNATURE) {
        return if buf.len() < V2_SIGNATURE.len() {
            Ok(Parsed::NeedMore)
        } else {
            parse_v2(buf)
        };
    }
    Ok(Parsed::Absent)
}

/// `buf` is a prefix of `sig` or starts with it.
fn starts_like(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

fn malformed(version: u8, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("malformed PROXY protocol v{version} header: {why}"),
    )
}

fn parse_v1(buf: &[u8]) -> Result<Parsed> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(malformed(1, format!("no CRLF within {V1_MAX} bytes")));
        }
        return Ok(Parsed::NeedMore);
    };
    let line =
        std::str::from_utf8(&buf[V1_PREFIX.len()..end]).map_err(|_| malformed(1, "not ASCII"))?;
    let len = end + 2;
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Ok(Parsed::Header { len, source: None }),
        [proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |text: &str| -> Result<IpAddr> {
                let ip: IpAddr = text
                    .parse()
                    .map_err(|_| malformed(1, format!("bad address {text:?}")))?;
                if ip.is_ipv4() != (*proto == "TCP4") {
                    return Err(malformed(1, format!("{text} is not a {proto} address")));
                }
                Ok(ip)
            };
            let port = |text: &str| -> Result<u16> {
                // The spec forbids leading zeros and signs.
                if text.is_empty()
                    || (text.len() > 1 && text.starts_with('0'))
                    || !text.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(malformed(1, format!("bad port {text:?}")));
                }
                text.parse()
                    .map_err(|_| malformed(1, format!("bad port {text:?}")))
            };
            let source = SocketAddr::new(ip(src)?, port(sport)?);
            ip(dst)?;
            port(dport)?;
            Ok(Parsed::Header {
                len,
                source: Some(source),
            })
        }
        _ => Err(malformed(1, format!("unexpected fields {line:?}"))),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed> {
    if buf.len() < V2_FIXED {
        return Ok(Parsed::NeedMore);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(malformed(
            2,
            format!("version {} (expected 2)", version_command >> 4),
        ));
    }
    let family = buf[13];
    let body_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = V2_FIXED + body_len;
    if buf.len() < len {
        return Ok(Parsed::NeedMore);
    }
    let body = &buf[V2_FIXED..len];
    match version_command & 0x0f {
        // LOCAL: the proxy speaking for itself (health checks).
        0 => return Ok(Parsed::Header { len, source: None }),
        1 => {}
        other => return Err(malformed(2, format!("unknown command {other}"))),
    }
    let need = |n: usize| {
        if body.len() < n {
            Err(malformed(
                2,
                format!("address block of {} bytes, {n} needed", body.len()),
            ))
        } else {
            Ok(())
        }
    };
    let source = match family {
        // TCP over IPv4: src, dst, sport, dport.
        0x11 => {
            need(12)?;
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        // TCP over IPv6.
        0x21 => {
            need(36)?;
            let octets: [u8; 16] = body[..16].try_into().expect("16 bytes");
            Some(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        // Unspecified, or a Unix stream: no IP to report.
        0x00 | 0x31 => None,
        other => {
            return Err(malformed(
                2,
                format!("unsupported address family/transport 0x{other:02x}"),
            ))
        }
    };
    Ok(Parsed::Header { len, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nrest";
        assert_eq!(
            parse(h).unwrap(),
            Parsed::Header {
                len: h.len() - 4,
                source: Some("192.0.2.1:56324".parse().unwrap())
            }
        );
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n";
        assert_eq!(
            parse(h).unwrap(),
            Parsed::Header {
                len: h.len(),
                source: Some("[2001:db8::1]:4000".parse().unwrap())
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap(),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
    }

    #[test]
    fn v2_inet_families_and_local() {
        let mut body = vec![192, 0, 2, 1, 10, 0, 0, 1];
        body.extend_from_slice(&1234u16.to_be_bytes());
        body.extend_from_slice(&80u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0, 1, 0]); // a TLV, skipped
        let h = v2(1, 0x11, &body);
        assert_eq!(
            parse(&h).unwrap(),
            Parsed::Header {
                len: h.len(),
                source: Some("192.0.2.1:1234".parse().unwrap())
            }
        );
        let mut body6 = vec![0u8; 36];
        body6[15] = 1;
        body6[32..34].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 0x21, &body6)).unwrap(),
            Parsed::Header {
                len: 52,
                source: Some("[::1]:9".parse().unwrap())
            }
        );
        assert_eq!(
            parse(&v2(0, 0x00, &[])).unwrap(),
            Parsed::Header {
                len: 16,
                source: None
            }
        );
    }

    #[test]
    fn partial_headers_need_more_and_frames_are_absent() {
        assert_eq!(parse(b"PRO").unwrap(), Parsed::NeedMore);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), Parsed::NeedMore);
        assert_eq!(parse(&V2_SIGNATURE[..5]).unwrap(), Parsed::NeedMore);
        assert_eq!(
            parse(&v2(1, 0x11, &[0; 12])[..20]).unwrap(),
            Parsed::NeedMore
        );
        assert_eq!(parse(&[0, 0, 0, 5, b'h']).unwrap(), Parsed::Absent);
        assert_eq!(parse(b"").unwrap(), Parsed::NeedMore);
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        for bad in [
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n".to_vec(),
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            [b"PROXY ".as_slice(), &[b'x'; 120]].concat(),
            v2(1, 0x11, &[0; 4]),
            v2(5, 0x11, &[0; 12]),
            v2(1, 0x12, &[0; 12]),
        ] {
            let e = parse(&bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
            assert!(e.detail().contains("PROXY"), "{e}");
        }
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(parse(&wrong_version).is_err());
    }
}
