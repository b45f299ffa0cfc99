//! Datagram addresses as strings: `udp://127.0.0.1:5353`, `udp://[::1]:0`,
//! `udp://localhost:5353`, `unixgram:///run/app.sock`, and
//! `unixgram://@name` for a name in Linux's abstract namespace (no file).
//! Senders are reported in the same form, so a reply can be sent to the
//! string a receive gave; a Unix sender that bound no address shows as
//! `unixgram://` and cannot be answered.

use std::fmt::{self, Write};
use std::net::ToSocketAddrs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use socket2::SockAddr;

use crate::addr::stream::{parse_host_port, MAX_UNIX_PATH};
use crate::error::{Error, ErrorKind, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DgramAddress {
    /// A host name or IP literal (IPv6 without brackets) and a port.
    Udp { host: String, port: u16 },
    /// A Unix datagram socket file.
    UnixPath(PathBuf),
    /// A name in the abstract namespace (written after `@`).
    UnixAbstract(Vec<u8>),
}

impl DgramAddress {
    pub fn parse(text: &str) -> Result<DgramAddress> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::InvalidAddress,
                format!("invalid datagram address \"{text}\": {why}"),
            )
        };
        if let Some(rest) = text.strip_prefix("udp://") {
            let (host, port) = parse_host_port(rest, "udp", &bad)?;
            return Ok(DgramAddress::Udp { host, port });
        }
        let Some(path) = text.strip_prefix("unixgram://") else {
            return Err(bad(
                "expected udp://HOST:PORT, unixgram://PATH or unixgram://@NAME",
            ));
        };
        if path.is_empty() {
            return Err(bad(
                "no path: an unnamed Unix socket cannot be addressed (the sender bound no address)",
            ));
        }
        if let Some(name) = path.strip_prefix('@') {
            // sun_path holds a leading NUL and then the name.
            if name.is_empty() || name.len() > MAX_UNIX_PATH {
                return Err(bad(&format!(
                    "an abstract name takes 1 to {MAX_UNIX_PATH} bytes, this one {}",
                    name.len()
                )));
            }
            return Ok(DgramAddress::UnixAbstract(name.as_bytes().to_vec()));
        }
        if path.len() > MAX_UNIX_PATH {
            return Err(bad(&format!(
                "the socket path is {} bytes, the limit is {MAX_UNIX_PATH}",
                path.len()
            )));
        }
        Ok(DgramAddress::UnixPath(PathBuf::from(path)))
    }

    /// The socket addresses, in resolver order (a UDP host name may give
    /// several, e.g. both ::1 and 127.0.0.1 for localhost).
    pub fn resolve(&self) -> Result<Vec<SockAddr>> {
        let invalid = |e: std::io::Error| {
            Error::new(
                ErrorKind::InvalidAddress,
                format!("cannot resolve {self}: {e}"),
            )
        };
        match self {
            DgramAddress::Udp { host, port } => {
                let found: Vec<SockAddr> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(invalid)?
                    .map(SockAddr::from)
                    .collect();
                if found.is_empty() {
                    return Err(Error::new(
                        ErrorKind::InvalidAddress,
                        format!("{self} resolved to no address"),
                    ));
                }
                Ok(found)
            }
            DgramAddress::UnixPath(path) => Ok(vec![SockAddr::unix(path).map_err(invalid)?]),
            DgramAddress::UnixAbstract(name) => {
                // socket2 reads a leading NUL as the abstract namespace.
                let mut raw = vec![0u8];
                raw.extend_from_slice(name);
                let path = Path::new(std::ffi::OsStr::from_bytes(&raw));
                Ok(vec![SockAddr::unix(path).map_err(invalid)?])
            }
        }
    }
}

impl fmt::Display for DgramAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DgramAddress::Udp { host, port } if host.contains(':') => {
                write!(f, "udp://[{host}]:{port}")
            }
            DgramAddress::Udp { host, port } => write!(f, "udp://{host}:{port}"),
            DgramAddress::UnixPath(path) => write!(f, "unixgram://{}", path.display()),
            DgramAddress::UnixAbstract(name) => {
                write!(f, "unixgram://@{}", String::from_utf8_lossy(name))
            }
        }
    }
}

/// The socket address of an address string that needs no resolving (an IP
/// literal, a Unix path or abstract name), built without allocating: the
/// path a server's replies take for every datagram. `None` for anything
/// else (host names, malformed text), which [`DgramAddress::parse`] then
/// handles or explains.
pub fn literal_sockaddr(text: &str) -> Option<SockAddr> {
    if let Some(rest) = text.strip_prefix("udp://") {
        // std reads "1.2.3.4:5" and "[::1]:5" without allocating.
        return rest
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(SockAddr::from);
    }
    let path = text.strip_prefix("unixgram://")?;
    match path.strip_prefix('@') {
        Some(name) if name.is_empty() || name.len() > MAX_UNIX_PATH => None,
        None if path.is_empty() || path.len() > MAX_UNIX_PATH => None,
        Some(name) => {
            // socket2 reads a leading NUL as the abstract namespace.
            let mut raw = [0u8; MAX_UNIX_PATH + 1];
            raw[1..=name.len()].copy_from_slice(name.as_bytes());
            let path = Path::new(std::ffi::OsStr::from_bytes(&raw[..=name.len()]));
            SockAddr::unix(path).ok()
        }
        None => SockAddr::unix(path).ok(),
    }
}

/// Writes a socket address in the form [`DgramAddress::parse`] reads into
/// `out` (cleared first), reusing its allocation: the receive path calls
/// this for every datagram.
pub fn write_dgram_sockaddr(addr: &SockAddr, out: &mut String) {
    out.clear();
    if let Some(inet) = addr.as_socket() {
        let _ = write!(out, "udp://{inet}");
    } else if let Some(path) = addr.as_pathname() {
        let _ = write!(out, "unixgram://{}", path.display());
    } else if let Some(name) = addr.as_abstract_namespace() {
        // Names that are not UTF-8 come out lossy; kernel autobind names
        // (five hex digits) and names given to sockserv are UTF-8.
        let _ = write!(out, "unixgram://@{}", String::from_utf8_lossy(name));
    } else {
        out.push_str("unixgram://");
    }
}

pub fn format_dgram_sockaddr(addr: &SockAddr) -> String {
    let mut out = String::new();
    write_dgram_sockaddr(addr, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let udp = |h: &str, p| DgramAddress::Udp {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            DgramAddress::parse("udp://127.0.0.1:5353").unwrap(),
            udp("127.0.0.1", 5353)
        );
        assert_eq!(DgramAddress::parse("udp://[::1]:0").unwrap(), udp("::1", 0));
        assert_eq!(
            DgramAddress::parse("unixgram:///run/a.sock").unwrap(),
            DgramAddress::UnixPath("/run/a.sock".into())
        );
        assert_eq!(
            DgramAddress::parse("unixgram://@svc").unwrap(),
            DgramAddress::UnixAbstract(b"svc".to_vec())
        );
    }

    #[test]
    fn round_trips_through_display_and_sockaddr() {
        for text in [
            "udp://127.0.0.1:9000",
            "udp://[::1]:7",
            "unixgram:///tmp/x.sock",
            "unixgram://@abc",
        ] {
            let addr = DgramAddress::parse(text).unwrap();
            assert_eq!(addr.to_string(), text);
            let sockaddr = addr.resolve().unwrap().remove(0);
            assert_eq!(format_dgram_sockaddr(&sockaddr), text);
        }
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for text in [
            "",
            "udp://",
            "udp://host",
            "udp://:80",
            "udp://1.2.3.4:65536",
            "udp://::1:80",
            "unixgram://",
            "unixgram://@",
            "tcp://127.0.0.1:80",
            "unix:///tmp/x",
        ] {
            let err = DgramAddress::parse(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidAddress, "{text}");
            assert!(err.detail().contains(text), "{err}");
        }
        let long = format!("unixgram:///{}", "a".repeat(200));
        assert!(DgramAddress::parse(&long)
            .unwrap_err()
            .detail()
            .contains("limit"));
        let long = format!("unixgram://@{}", "a".repeat(108));
        assert!(DgramAddress::parse(&long).is_err());
        let longest = format!("unixgram://@{}", "a".repeat(107));
        assert!(DgramAddress::parse(&longest).unwrap().resolve().is_ok());
    }

    #[test]
    fn literals_need_no_parsing_and_agree_with_it() {
        for text in [
            "udp://127.0.0.1:9000",
            "udp://[::1]:7",
            "unixgram:///tmp/x.sock",
            "unixgram://rel.sock",
            "unixgram://@abc",
        ] {
            let fast = literal_sockaddr(text).unwrap();
            let slow = DgramAddress::parse(text)
                .unwrap()
                .resolve()
                .unwrap()
                .remove(0);
            assert_eq!(format_dgram_sockaddr(&fast), format_dgram_sockaddr(&slow));
            assert_eq!(fast.len(), slow.len(), "{text}");
        }
        for text in [
            "udp://localhost:5",
            "udp://1.2.3.4",
            "unixgram://",
            "unixgram://@",
            "tcp://1.2.3.4:5",
        ] {
            assert!(literal_sockaddr(text).is_none(), "{text}");
        }
        let longest = format!("unixgram://@{}", "a".repeat(107));
        assert!(literal_sockaddr(&longest).is_some());
    }

    #[test]
    fn an_unnamed_socket_formats_as_the_bare_scheme() {
        let unnamed = SockAddr::unix("").unwrap();
        assert_eq!(format_dgram_sockaddr(&unnamed), "unixgram://");
    }
}
