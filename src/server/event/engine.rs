//! The event-driven driver: a few I/O threads (by default one per core),
//! each an [`IoThread`] holding its share of the connections. The accept
//! loop hands them sockets in turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use socket2::Socket;

use crate::error::{Error, Result};
use crate::server::driver::{Context, Driver, HandOver};
use crate::server::event::conn::EventConn;
use crate::server::event::handler::EventHandler;
use crate::server::event::inbox::{Command, Inbox};
use crate::server::event::state::{EngineShared, IoThread};
use crate::util::sync::lock;

pub(crate) struct EventEngine {
    shared: Arc<EngineShared>,
    inboxes: Vec<Arc<Inbox>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicUsize,
}

impl EventEngine {
    /// Starts the I/O threads.
    pub fn start(context: Arc<Context>, handler: Arc<dyn EventHandler>) -> Result<EventEngine> {
        EventEngine::start_with(context, handler, None)
    }

    /// Starts the I/O threads of a threaded server's preamble stage: they
    /// run each connection's preamble (PROXY header, verify, handshake)
    /// with the same session and timers as event mode, and give every
    /// connection that passes to `hand_over` instead of opening it.
    pub fn start_preamble_stage(context: Arc<Context>, hand_over: HandOver) -> Result<EventEngine> {
        EventEngine::start_with(context, Arc::new(NoCallbacks), Some(hand_over))
    }

    fn start_with(
        context: Arc<Context>,
        handler: Arc<dyn EventHandler>,
        hand_over: Option<HandOver>,
    ) -> Result<EventEngine> {
        let count = match context.config.io_threads {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let shared = Arc::new(EngineShared::new(context, handler, hand_over));
        // On an error below, dropping `engine` stops the threads started.
        let mut engine = EventEngine {
            shared: shared.clone(),
            inboxes: Vec::new(),
            threads: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
        };
        for i in 0..count {
            let io = IoThread::new(shared.clone())
                .map_err(|e| Error::io("creating an I/O thread's poller", &e))?;
            engine.inboxes.push(io.inbox());
            let thread = thread::Builder::new()
                .name(format!("sockserv-io-{i}"))
                .spawn(move || io.run())
                .map_err(|e| Error::io("starting an I/O thread", &e))?;
            lock(&engine.threads).push(thread);
        }
        Ok(engine)
    }

    /// The I/O threads' inboxes, for dialing on them.
    pub fn inboxes(&self) -> Vec<Arc<Inbox>> {
        self.inboxes.clone()
    }
}

impl Driver for EventEngine {
    fn adopt(&self, socket: Socket, peer: String) {
        self.shared.active.fetch_add(1, Ordering::AcqRel);
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
        self.inboxes[i].post(Command::Adopt(socket, peer));
    }

    fn running(&self) -> usize {
        self.shared.active.load(Ordering::Acquire)
    }

    fn close_all(&self) {
        for inbox in &self.inboxes {
            inbox.post(Command::Stop);
        }
        for thread in lock(&self.threads).drain(..) {
            // A callback that drops its own server cannot join its thread.
            if !crate::sys::is_current_thread(&thread) {
                let _ = thread.join();
            }
        }
    }
}

/// A preamble stage's handler: its connections never open there.
struct NoCallbacks;

impl EventHandler for NoCallbacks {
    fn on_open(&self, _: &Arc<EventConn>) {}
    fn on_frame(&self, _: &Arc<EventConn>, _: &[u8]) {}
    fn on_close(&self, _: &Arc<EventConn>, _: Option<&Error>) {}
}

impl Drop for EventEngine {
    fn drop(&mut self) {
        // A failed start leaves threads behind: stop them too.
        self.close_all();
    }
}
