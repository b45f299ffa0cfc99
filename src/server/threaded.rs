//! The threaded driver: a thread per connection runs the session's preamble
//! (PROXY header, verify, handshake) and then the handler, like `socketserver.ThreadingTCPServer`. The connection
//! closes when the handler returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use socket2::Socket;

use crate::error::{log_refusal, Error};
use crate::proto::session::Stage;
use crate::server::driver::{Context, Driver, Handler};
use crate::stream::connection::Connection;
use crate::util::sync::lock;

pub(crate) struct Threaded {
    shared: Arc<Shared>,
}

struct Shared {
    context: Arc<Context>,
    handler: Option<Handler>,
    live: Mutex<Live>,
    /// Set once `close_all` starts: connections that register later close
    /// themselves.
    closing_all: AtomicBool,
}

#[derive(Default)]
struct Live {
    next_id: u64,
    conns: HashMap<u64, Arc<Connection>>,
    threads: HashMap<u64, JoinHandle<()>>,
    /// Threads that have ended and wait to be joined.
    finished: Vec<u64>,
}

impl Threaded {
    pub fn new(context: Arc<Context>, handler: Option<Handler>) -> Threaded {
        Threaded {
            shared: Arc::new(Shared {
                context,
                handler,
                live: Mutex::new(Live::default()),
                closing_all: AtomicBool::new(false),
            }),
        }
    }

    /// Joins the threads of connections that have ended.
    fn reap_finished(&self) {
        let done: Vec<JoinHandle<()>> = {
            let mut live = lock(&self.shared.live);
            let ids = std::mem::take(&mut live.finished);
            ids.iter()
                .filter_map(|id| live.threads.remove(id))
                .collect()
        };
        for thread in done {
            let _ = thread.join();
        }
    }
}

impl Driver for Threaded {
    fn adopt(&self, socket: Socket, _peer: String) {
        self.reap_finished();
        let mut live = lock(&self.shared.live);
        let id = live.next_id;
        live.next_id += 1;
        let shared = self.shared.clone();
        let spawned = thread::Builder::new()
            .name("sockserv-conn".into())
            .spawn(move || shared.run_connection(id, socket));
        // Out of threads: the socket went down with the closure and the
        // client sees the connection close.
        if let Ok(thread) = spawned {
            live.threads.insert(id, thread);
        }
    }

    fn running(&self) -> usize {
        let live = lock(&self.shared.live);
        live.threads.len() - live.finished.len()
    }

    fn close_all(&self) {
        self.shared.closing_all.store(true, Ordering::SeqCst);
        let threads: Vec<JoinHandle<()>> = {
            let mut live = lock(&self.shared.live);
            for conn in live.conns.values() {
                conn.close_for_shutdown();
            }
            live.threads.drain().map(|(_, t)| t).collect()
        };
        for t in threads {
            // A handler that drops its own server cannot join itself.
            if !crate::sys::is_current_thread(&t) {
                let _ = t.join();
            }
        }
    }
}

impl Shared {
    fn run_connection(&self, id: u64, socket: Socket) {
        let _finish = Finish { shared: self, id };
        let config = &self.context.config;
        let conn = match Connection::accepted(socket, config) {
            Ok(conn) => Arc::new(conn),
            Err(_) => return,
        };
        {
            let mut live = lock(&self.live);
            live.conns.insert(id, conn.clone());
            // close_all may have run just before we registered.
            if self.closing_all.load(Ordering::SeqCst) {
                conn.close_for_shutdown();
            }
        }
        // PROXY header, verify on the client it names, handshake: within
        // one deadline, as in event mode. Each refusal is counted (and
        // logged) before the peer can see it: before a #FAILURE# is sent or
        // the stream shut down.
        let refused = |stage: Stage, peer: &str, e: &Error| {
            let counter = match stage {
                Stage::Proxy => &self.context.proxy_failures,
                Stage::Handshake => &self.context.handshake_failures,
                _ => return,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            log_refusal(peer, e.kind(), e.detail());
        };
        if conn
            .run_preamble(|peer| self.context.verify(peer), refused)
            .is_err()
        {
            return;
        }
        if let Some(handler) = &self.handler {
            handler(&conn);
        }
        // Replies a coalescing handler held leave before the close.
        conn.flush_within(config.handshake_timeout);
        self.context.handled.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs when a connection thread ends, however it ends (a panicking
/// handler included): unregisters the connection and wakes the accept loop
/// so it can take a new connection.
struct Finish<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut live = lock(&self.shared.live);
        live.conns.remove(&self.id);
        live.finished.push(self.id);
        drop(live);
        self.shared.context.wake();
    }
}
