//! A TLS tunnel for raw peers: plaintext bytes written to its own
//! 127.0.0.1 port travel inside a TLS 1.3 connection (rustls, trusting
//! the fixture's CA) to a TLS server, and what the server sends comes
//! back out in plaintext. It lets the raw hostile peers of the plaintext
//! suites (tests/bad_input.rs) speak inside TLS unchanged. A plaintext
//! EOF becomes close_notify; a TLS EOF or error closes the plaintext side.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A rustls client config (TLS 1.3, ring) trusting the CA in `ca_file`.
pub fn rustls_client_config(ca_file: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

pub struct Tunnel {
    /// Where raw peers connect ("127.0.0.1:PORT").
    pub entry: String,
}

impl Tunnel {
    /// Tunnels every connection to its entry into TLS to `target`
    /// (host:port of a server with a certificate for 127.0.0.1).
    pub fn start(target: &str, ca_file: &Path) -> Tunnel {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let entry = listener.local_addr().unwrap().to_string();
        let config = rustls_client_config(ca_file);
        let target = target.to_string();
        thread::spawn(move || {
            for plain in listener.incoming() {
                let Ok(plain) = plain else { return };
                let Ok(tcp) = TcpStream::connect(&target) else {
                    continue;
                };
                let name = ServerName::try_from("127.0.0.1").unwrap();
                let tls = rustls::ClientConnection::new(config.clone(), name).unwrap();
                carry(plain, tcp, tls);
            }
        });
        Tunnel { entry }
    }
}

/// Writes out whatever TLS bytes rustls has pending.
fn flush(tls: &mut rustls::ClientConnection, tcp: &mut TcpStream) -> bool {
    while tls.wants_write() {
        if tls.write_tls(tcp).is_err() {
            return false;
        }
    }
    true
}

fn carry(plain: TcpStream, tcp: TcpStream, tls: rustls::ClientConnection) {
    // Bounded: a tunnel never outlives a stuck test by much.
    let _ = plain.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(60)));
    let tls = Arc::new(Mutex::new(tls));
    {
        let mut tcp = tcp.try_clone().unwrap();
        flush(&mut tls.lock().unwrap(), &mut tcp); // the ClientHello
    }
    // Plaintext in -> TLS out.
    {
        let (tls, mut tcp, mut plain) = (
            tls.clone(),
            tcp.try_clone().unwrap(),
            plain.try_clone().unwrap(),
        );
        thread::spawn(move || {
            let mut chunk = vec![0u8; 65536];
            loop {
                let n = plain.read(&mut chunk).unwrap_or(0);
                let mut conn = tls.lock().unwrap();
                if n == 0 {
                    conn.send_close_notify();
                    flush(&mut conn, &mut tcp);
                    let _ = tcp.shutdown(Shutdown::Write);
                    return;
                }
                // Before the handshake is done rustls holds the bytes and
                // sends them once it is (from the other thread's flush).
                if conn.writer().write_all(&chunk[..n]).is_err() || !flush(&mut conn, &mut tcp) {
                    return;
                }
            }
        });
    }
    // TLS in -> plaintext out.
    thread::spawn(move || {
        let (mut tcp, mut plain) = (tcp, plain);
        let mut chunk = vec![0u8; 65536];
        let mut out = Vec::new();
        loop {
            let n = tcp.read(&mut chunk).unwrap_or(0);
            let mut conn = tls.lock().unwrap();
            let mut ok = n > 0;
            if ok {
                let mut fed = &chunk[..n];
                while ok && !fed.is_empty() {
                    ok = conn.read_tls(&mut fed).is_ok() && conn.process_new_packets().is_ok();
                }
                // What the server sent, and any alert of ours.
                let _ = conn.reader().read_to_end(&mut out);
                flush(&mut conn, &mut tcp);
            }
            drop(conn);
            if !out.is_empty() && plain.write_all(&out).is_err() {
                ok = false;
            }
            out.clear();
            if !ok {
                let _ = plain.shutdown(Shutdown::Write);
                let _ = tcp.shutdown(Shutdown::Both);
                return;
            }
        }
    });
}
