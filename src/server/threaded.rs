//! The threaded driver: a thread per authenticated connection runs the
//! handler, like `socketserver.ThreadingTCPServer`. The connection closes
//! when the handler returns.
//!
//! The preamble (PROXY header, verify, handshake) runs first on an
//! event-driven preamble stage: event mode's I/O threads and session, with
//! its one preamble deadline, holding every pending connection without a
//! thread. A connection that passes is handed over (socket, open session,
//! the bytes received past the handshake) and only then gets its thread,
//! so `max_connections` bounds threads doing authenticated work and
//! strangers who never answer the challenge cannot hold them. Pending
//! preambles have their own bound (`max_pending_handshakes`). Without a
//! preamble (no keys, no PROXY header) a connection gets its thread at
//! once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use socket2::Socket;

use crate::config::WhenFull;
use crate::error::{log_refusal, Error, ErrorKind, Result};
use crate::proto::session::Stage;
use crate::server::driver::{Context, Driver, Handler, Preambled};
use crate::server::event::engine::EventEngine;
use crate::stream::connection::Connection;
use crate::util::sync::lock;

pub(crate) struct Threaded {
    shared: Arc<Shared>,
    /// Runs the preambles, when connections have one.
    stage: Option<EventEngine>,
}

/// What a connection thread starts from.
enum Start {
    /// Straight from the accept loop (no preamble to run).
    Accepted(Socket),
    /// From the preamble stage, authenticated.
    Preambled(Box<Preambled>),
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
    /// Authenticated connections waiting for a thread (`WhenFull::Wait`,
    /// every thread busy): they passed their preamble while the last
    /// slots filled.
    parked: VecDeque<Preambled>,
}

impl Live {
    /// Connection threads still running (`close_all` may have taken
    /// their handles already).
    fn busy(&self) -> usize {
        self.threads.len().saturating_sub(self.finished.len())
    }
}

impl Threaded {
    pub fn new(context: Arc<Context>, handler: Option<Handler>) -> Result<Threaded> {
        let shared = Arc::new(Shared {
            context: context.clone(),
            handler,
            live: Mutex::new(Live::default()),
            closing_all: AtomicBool::new(false),
        });
        let stage = if context.has_preamble() {
            let to = shared.clone();
            let hand_over = Box::new(move |p: Preambled| to.authenticated(p));
            Some(EventEngine::start_preamble_stage(context, hand_over)?)
        } else {
            None
        };
        Ok(Threaded { shared, stage })
    }
}

impl Shared {
    /// Joins the threads of connections that have ended.
    fn reap_finished(&self) {
        let done: Vec<JoinHandle<()>> = {
            let mut live = lock(&self.live);
            let ids = std::mem::take(&mut live.finished);
            ids.iter()
                .filter_map(|id| live.threads.remove(id))
                .collect()
        };
        for thread in done {
            let _ = thread.join();
        }
    }

    /// Starts a connection's thread.
    fn spawn(self: &Arc<Self>, start: Start) {
        self.reap_finished();
        self.spawn_in(&mut lock(&self.live), start);
    }

    /// Starts a connection's thread, registered in `live` (held by the
    /// caller, so a check of `busy()` and the start are one step), without
    /// joining ended threads first (a thread that is ending must not join
    /// itself).
    fn spawn_in(self: &Arc<Self>, live: &mut Live, start: Start) {
        let id = live.next_id;
        live.next_id += 1;
        let shared = self.clone();
        let spawned = thread::Builder::new()
            .name("sockserv-conn".into())
            .spawn(move || shared.run_connection(id, start));
        // Out of threads: the socket went down with the closure and the
        // client sees the connection close.
        if let Ok(thread) = spawned {
            live.threads.insert(id, thread);
        }
    }

    fn running(&self) -> usize {
        let live = lock(&self.live);
        live.busy()
    }

    /// A connection passed its preamble on the stage (an I/O thread calls
    /// this): its thread starts now, or, every thread being busy, it waits
    /// for one (`WhenFull::Wait`) or is refused (`WhenFull::Refuse`).
    fn authenticated(self: &Arc<Self>, p: Preambled) {
        if self.closing_all.load(Ordering::SeqCst) {
            return;
        }
        self.reap_finished();
        // The check and the start under one lock: the stage's I/O threads
        // hand connections over at the same time, and a finishing thread
        // unparks one (checked apart, two could take the last slot).
        let mut live = lock(&self.live);
        if live.busy() >= self.context.config.max_connections {
            if self.context.config.when_full == WhenFull::Refuse {
                drop(live);
                self.context
                    .refused_when_full
                    .fetch_add(1, Ordering::Relaxed);
                log_refusal(
                    &p.peer,
                    ErrorKind::ConnectionRefused,
                    &format!(
                        "refused: every one of the server's {} handler threads is busy",
                        self.context.config.max_connections
                    ),
                );
                return;
            }
            live.parked.push_back(p);
            return;
        }
        self.spawn_in(&mut live, Start::Preambled(Box::new(p)));
    }

    /// A thread ended: a parked connection gets its slot.
    fn unpark(self: &Arc<Self>) {
        let mut live = lock(&self.live);
        if live.busy() >= self.context.config.max_connections
            || self.closing_all.load(Ordering::SeqCst)
        {
            return;
        }
        if let Some(p) = live.parked.pop_front() {
            self.spawn_in(&mut live, Start::Preambled(Box::new(p)));
        }
    }
}

impl Driver for Threaded {
    fn adopt(&self, socket: Socket, peer: String) {
        match &self.stage {
            // The stage posts it to an I/O thread; its thread comes after.
            Some(stage) => stage.adopt(socket, peer),
            None => self.shared.spawn(Start::Accepted(socket)),
        }
    }

    fn running(&self) -> usize {
        self.shared.running()
    }

    fn active(&self) -> usize {
        self.running() + self.pending()
    }

    fn pending_full(&self) -> bool {
        self.stage.is_some() && self.pending() >= self.shared.context.config.max_pending_handshakes
    }

    fn close_all(&self) {
        self.shared.closing_all.store(true, Ordering::SeqCst);
        // No more hand-overs: pending preambles end first.
        if let Some(stage) = &self.stage {
            stage.close_all();
        }
        let threads: Vec<JoinHandle<()>> = {
            let mut live = lock(&self.shared.live);
            live.parked.clear();
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

impl Threaded {
    /// Connections in their preamble on the stage, or authenticated and
    /// waiting for a thread.
    fn pending(&self) -> usize {
        let Some(stage) = &self.stage else {
            return 0;
        };
        let parked = lock(&self.shared.live).parked.len();
        stage.running() + parked
    }
}

impl Shared {
    fn run_connection(self: &Arc<Self>, id: u64, start: Start) {
        let _finish = Finish { shared: self, id };
        let config = &self.context.config;
        let (conn, preambled) = match start {
            Start::Accepted(socket) => (Connection::accepted(socket, config), false),
            Start::Preambled(p) => {
                let p = *p;
                let conn = Connection::resume(
                    p.socket,
                    config,
                    p.session,
                    p.received.pending(),
                    p.peer,
                    p.unsent,
                );
                (conn, true)
            }
        };
        let conn = match conn {
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
        if preambled {
            // What the stage could not write of the handshake leaves first.
            conn.flush_within(config.handshake_timeout);
        } else {
            // Without keys or a PROXY header this only opens the session;
            // otherwise, as on the stage: within one deadline, each refusal
            // counted (and logged) before the peer can see it: before a
            // #FAILURE# is sent or the stream shut down.
            let refused = |stage: Stage, peer: &str, e: &Error| {
                let counter = match stage {
                    Stage::Proxy => &self.context.proxy_failures,
                    Stage::Tls | Stage::Handshake => &self.context.handshake_failures,
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
    shared: &'a Arc<Shared>,
    id: u64,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut live = lock(&self.shared.live);
        live.conns.remove(&self.id);
        live.finished.push(self.id);
        drop(live);
        self.shared.unpark();
        self.shared.context.wake();
    }
}
