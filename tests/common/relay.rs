//! A man in the middle on loopback: a TCP relay that records every byte
//! it passes each way and, once armed, rewrites one byte of what the
//! client sends next. The attacker of issue 11.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct State {
    /// Client to server, and server to client, as relayed.
    up: Mutex<Vec<u8>>,
    down: Mutex<Vec<u8>>,
    /// Armed: XOR `mask` into the byte at this offset of the upstream
    /// (counted from the start of the connection's upstream bytes).
    target: Mutex<Option<(u64, u8)>>,
    rewritten: AtomicBool,
    upstream_len: AtomicU64,
    connections: AtomicU64,
}

/// A relay from its own 127.0.0.1 port to `target`, one connection at a
/// time in mind (the counts are for the whole relay). Threads end when
/// their sockets close; the listener thread lives as long as the test.
pub struct Relay {
    pub port: u16,
    state: Arc<State>,
}

impl Relay {
    /// Relays connections to `target` (host:port).
    pub fn start(target: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let target = target.to_string();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = shared.clone();
                thread::spawn(move || pump(client, server, &up, true));
                let down = shared.clone();
                thread::spawn(move || pump(s2, c2, &down, false));
            }
        });
        Relay { port, state }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// From now on, the client's byte `offset` bytes ahead is XORed with
    /// `mask` on its way through (once).
    pub fn arm(&self, offset: u64, mask: u8) {
        let at = self.state.upstream_len.load(Ordering::SeqCst) + offset;
        *self.state.target.lock().unwrap() = Some((at, mask));
    }

    /// Whether the armed rewrite has happened.
    pub fn rewritten(&self) -> bool {
        self.state.rewritten.load(Ordering::SeqCst)
    }

    /// Everything relayed so far, client to server then server to client.
    pub fn recorded(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.state.up.lock().unwrap().clone(),
            self.state.down.lock().unwrap().clone(),
        )
    }

    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: &State, upstream: bool) {
    // Bounded: a relay never outlives a stuck test by much.
    let _ = from.set_read_timeout(Some(Duration::from_secs(60)));
    let mut chunk = [0u8; 16384];
    let mut seen = 0u64;
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let bytes = &mut chunk[..n];
        if upstream {
            let mut target = state.target.lock().unwrap();
            if let Some((at, mask)) = *target {
                if at >= seen && at < seen + n as u64 {
                    bytes[(at - seen) as usize] ^= mask;
                    *target = None;
                    state.rewritten.store(true, Ordering::SeqCst);
                }
            }
            seen += n as u64;
            state.upstream_len.store(seen, Ordering::SeqCst);
            state.up.lock().unwrap().extend_from_slice(bytes);
        } else {
            state.down.lock().unwrap().extend_from_slice(bytes);
        }
        if to.write_all(bytes).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
