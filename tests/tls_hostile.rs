//! TLS against a hostile network: a relay on loopback that records the
//! stream and rewrites a byte after the handshake (the attack of issue
//! 11), shown first against plaintext (where it works: the reason for
//! TLS, and proof that the relay does what the TLS tests assume).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::relay::{self, Relay};
use common::*;
use sockserv::{Config, Connection, Error, EventConn, EventHandler, Server};

/// Every frame a server's handler got, and every error a connection of
/// it ended with.
#[derive(Default)]
struct Got {
    frames: Mutex<Vec<Vec<u8>>>,
    errors: Mutex<Vec<Error>>,
    opened: std::sync::atomic::AtomicUsize,
}

impl Got {
    fn opened(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn frames(&self) -> Vec<Vec<u8>> {
        self.frames.lock().unwrap().clone()
    }
    fn errors(&self) -> Vec<Error> {
        self.errors.lock().unwrap().clone()
    }
}

struct GotEvents(Arc<Got>);

impl EventHandler for GotEvents {
    fn on_open(&self, _: &Arc<EventConn>) {
        self.0
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
        self.0.frames.lock().unwrap().push(frame.to_vec());
        let _ = conn.send(frame);
    }
    fn on_close(&self, _: &Arc<EventConn>, reason: Option<&Error>) {
        if let Some(e) = reason {
            self.0.errors.lock().unwrap().push(e.clone());
        }
    }
}

/// An echo server on `addr` in `mode` that keeps what its handler got.
fn keeping_server(addr: &str, config: &Config, mode: Mode) -> (Server, Arc<Got>) {
    let got: Arc<Got> = Arc::default();
    let server = Server::bind(addr, config).unwrap();
    let g = got.clone();
    match mode {
        Mode::Threaded => server
            .set_handler(Arc::new(move |conn: &Arc<Connection>| {
                g.opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                loop {
                    match conn.recv_with(|f| f.to_vec()) {
                        Ok(frame) => {
                            g.frames.lock().unwrap().push(frame.clone());
                            if conn.send(&frame).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            g.errors.lock().unwrap().push(e);
                            return;
                        }
                    }
                }
            }))
            .unwrap(),
        Mode::Event => server.set_event_handler(Arc::new(GotEvents(g))).unwrap(),
    }
    server.start().unwrap();
    (server, got)
}

const ORDER: &[u8] = b"pay alice 100";
/// Where the relay strikes, counted from the start of the frame's bytes
/// on the wire: plaintext, the '1' of "100" (4-byte header + 10); TLS,
/// a byte of the record's ciphertext (5-byte record header + 9).
const STRIKE: u64 = 14;
/// '1' ^ 8 = '9'.
const MASK: u8 = 0x08;

/// Plaintext with a key: the relay passes the handshake, then reads the
/// order and rewrites it, and the handler gets "pay alice 900". What TLS
/// is for; and the relay is shown to record and to rewrite.
#[test]
fn plaintext_relay_reads_and_rewrites_what_tls_protects() {
    for mode in [Mode::Threaded, Mode::Event] {
        let config = config_with_key(KEY);
        let (server, got) = keeping_server("tcp://127.0.0.1:0", &config, mode);
        let relay = Relay::start(&tcp_target(&server));
        let conn = sockserv::connect(&format!("tcp://{}", relay.addr()), &config).unwrap();
        conn.set_timeout(Some(Duration::from_secs(10)));
        // The handler runs once the server has had every handshake byte:
        // nothing of the client's is in flight when the relay is armed.
        assert!(wait_until(Duration::from_secs(10), || got.opened() == 1));
        relay.arm(STRIKE, MASK);
        conn.send(ORDER).unwrap();
        let back = conn.recv_with(|f| f.to_vec()).unwrap();
        assert_eq!(back, b"pay alice 900", "{mode:?}");
        assert!(relay.rewritten());
        assert_eq!(got.frames(), vec![b"pay alice 900".to_vec()], "{mode:?}");
        let (up, down) = relay.recorded();
        assert!(relay::contains(&up, b"pay alice 900") && relay::contains(&down, b"pay alice 900"));
        // The handshake too is in the clear (though the key is not).
        assert!(relay::contains(&down, b"#CHALLENGE#") && relay::contains(&up, b"#WELCOME#"));
        assert!(got.errors().is_empty(), "{:?}", got.errors());
    }
}
