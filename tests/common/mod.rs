//! Helpers shared by the integration tests: servers on loopback with an
//! echo handler, raw peers for hostile input, bounded waits.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockserv::{Config, Connection, ErrorKind, Server};

pub const KEY: &[u8] = b"correct horse battery staple";

pub fn config_with_key(key: &[u8]) -> Config {
    let mut c = Config::default();
    c.set_key(key).unwrap();
    c.set_handshake_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// Echoes every frame back until the peer closes or errs.
pub fn echo(conn: &Arc<Connection>) {
    loop {
        let frame = match conn.recv_with(|f| f.to_vec()) {
            Ok(f) => f,
            Err(_) => return,
        };
        if conn.send(&frame).is_err() {
            return;
        }
    }
}

/// A started echo server on `addr` with `config`.
pub fn echo_server(addr: &str, config: &Config) -> Server {
    let server = Server::bind(addr, config).unwrap();
    server.set_handler(Arc::new(echo)).unwrap();
    server.start().unwrap();
    server
}

/// Sends a frame and checks that the same bytes come back.
pub fn roundtrip(conn: &Connection, payload: &[u8]) {
    conn.send(payload).unwrap();
    let back = conn.recv_with(|f| f.to_vec()).unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");
}

/// The TCP address of a server, as host:port for std sockets.
pub fn tcp_target(server: &Server) -> String {
    server.local_addr().trim_start_matches("tcp://").to_string()
}

/// A raw TCP socket to the server, for writing hostile bytes.
pub fn raw(server: &Server) -> TcpStream {
    let s = TcpStream::connect(tcp_target(server)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one frame from a raw socket (for raw peers speaking the protocol).
pub fn raw_read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header)?;
    let n = i32::from_be_bytes(header);
    assert!(n >= 0, "raw reader only takes short headers");
    let mut payload = vec![0u8; n as usize];
    s.read_exact(&mut payload)?;
    Ok(payload)
}

pub fn raw_write_frame(s: &mut TcpStream, payload: &[u8]) {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    s.write_all(&bytes).unwrap();
}

/// Waits until `cond` holds, polling, for at most `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

pub fn kind<T>(r: sockserv::Result<T>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
