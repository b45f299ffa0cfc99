//! The address parser (`Address::parse`) and its `Display`, on arbitrary
//! strings. Nothing is resolved through DNS: only IP literals and Unix
//! paths are turned into socket addresses, which needs no network.
//!
//! Checked: no panic; a refusal is `InvalidAddress` and quotes the text; an
//! accepted address prints as text that parses back to the same address;
//! a Unix path is within the kernel's 107 bytes and not empty; a TCP host
//! is not empty; an IP literal resolves to itself and formats back to an
//! address that parses.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use sockserv::testing::{format_sockaddr, Address};
use sockserv::ErrorKind;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let addr = match Address::parse(text) {
        Ok(addr) => addr,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidAddress);
            assert!(e.detail().contains(text), "{e}");
            return;
        }
    };
    let shown = addr.to_string();
    let again = Address::parse(&shown)
        .unwrap_or_else(|e| panic!("{text:?} parsed, but its display {shown:?} does not: {e}"));
    assert_eq!(again, addr, "{text:?} -> {shown:?}");
    match &addr {
        Address::Unix(path) => {
            let len = path.as_os_str().len();
            assert!(len > 0 && len <= 107, "unix path of {len} bytes");
            // Local only: builds a sockaddr_un, or refuses (e.g. a NUL).
            if let Ok(resolved) = addr.resolve() {
                assert_eq!(resolved.len(), 1);
            }
        }
        // A TLS address is a TCP one with TLS on top: the same socket.
        Address::Tcp { host, port } | Address::Tls { host, port } => {
            assert!(!host.is_empty());
            if let Ok(ip) = host.parse::<IpAddr>() {
                // An IP literal resolves without any lookup.
                let resolved = addr.resolve().expect("an IP literal resolves");
                let first = resolved[0].as_socket().expect("an IP address");
                assert_eq!((first.ip(), first.port()), (ip, *port));
                let formatted = format_sockaddr(&resolved[0]);
                Address::parse(&formatted)
                    .unwrap_or_else(|e| panic!("format_sockaddr gave {formatted:?}: {e}"));
            }
        }
        // Inherited sockets name no place to connect to.
        Address::Fd(_) | Address::Systemd(_) => {
            let e = addr
                .resolve()
                .expect_err("an inherited socket does not resolve");
            assert_eq!(e.kind(), ErrorKind::InvalidAddress);
        }
    }
});
