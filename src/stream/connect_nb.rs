//! The connecting side without blocking, for a caller's event loop: a
//! non-blocking `connect` to each resolved address in turn (each within
//! the connect timeout), then the session's preamble as the client (the
//! handshake with keys, within the handshake timeout), driven by
//! [`Connecting::advance`] each time the socket is ready. When the preamble
//! is done the socket becomes the same [`Connection`] that
//! [`connect`](crate::connect) gives (through `Connection::resume`, as the
//! threaded server's preamble stage hands its connections over).
//!
//! Names are resolved by [`Connecting::start`], on the calling thread (a
//! numeric address never waits).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::stream::{format_sockaddr, Address};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::proto::handshake::{Role, NONCE_LEN};
use crate::proto::recv_buffer::RecvBuffer;
use crate::proto::session::{Session, SessionParams, Step};
use crate::stream::connection::Connection;
use crate::sys::random;
use crate::util::sync::lock;

/// The most one read takes during the preamble (a handshake frame is at
/// most a few hundred bytes; frames after it are kept for the connection).
const PREAMBLE_READ: usize = 4096;

/// What [`Connecting::advance`] got to.
#[allow(clippy::large_enum_variant)] // Made once per connection.
pub enum Progress {
    /// Connected and past the preamble: the connection, in non-blocking
    /// mode (see [`Connection::set_nonblocking`]).
    Ready(Connection),
    /// Not yet: wait until the socket ([`Connecting::fd`]) is readable, or
    /// writable with `want_write`, then call again.
    Pending {
        /// Wait for writability (the connect, or a handshake write), not
        /// readability.
        want_write: bool,
    },
}

/// A client connection on its way: connecting, then its preamble.
pub struct Connecting {
    addr: String,
    targets: Vec<SockAddr>,
    config: Config,
    stage: Stage,
}

#[allow(clippy::large_enum_variant)] // One per connection, changed a few times.
enum Stage {
    /// Waiting for the connect to `targets[target]`, until `deadline`.
    Tcp {
        socket: Socket,
        target: usize,
        deadline: Instant,
    },
    /// Connected: the preamble runs.
    Preamble {
        socket: Socket,
        session: Session,
        buf: RecvBuffer,
        out: Vec<u8>,
        peer: String,
    },
    /// Failed or handed out.
    Over,
}

impl Connecting {
    /// Resolves `addr` (`tcp://HOST:PORT`, `tls://HOST:PORT`, `unix://PATH`) and starts a
    /// non-blocking connect to its first address; returns at once
    /// (after the name lookup). An address refused at once (a Unix path
    /// with nobody there) moves on to the next; when none is left, that is
    /// the error.
    pub fn start(addr: &str, config: &Config) -> Result<Connecting> {
        let parsed = Address::parse(addr)?;
        let targets = parsed.resolve()?;
        let mut connecting = Connecting {
            addr: parsed.to_string(),
            targets,
            config: config.for_dialing(&parsed)?,
            stage: Stage::Over,
        };
        connecting.connect_from(0, None)?;
        Ok(connecting)
    }

    /// The address dialed.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The socket to wait on, -1 once failed. It changes only when an
    /// address failed and the next one is tried.
    pub fn fd(&self) -> RawFd {
        match &self.stage {
            Stage::Tcp { socket, .. } | Stage::Preamble { socket, .. } => socket.as_raw_fd(),
            Stage::Over => -1,
        }
    }

    /// How long a loop may wait for the socket before calling
    /// [`Connecting::advance`] anyway: until the connect's or the
    /// preamble's deadline (zero once it passed), which only `advance`
    /// notices. `None` once failed or done.
    pub fn timeout(&self) -> Option<Duration> {
        let deadline = match &self.stage {
            Stage::Tcp { deadline, .. } => Some(*deadline),
            Stage::Preamble { session, .. } => session.deadline(),
            Stage::Over => None,
        }?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// Does what can be done now without blocking. An error ends it (the
    /// socket is closed); a connect or preamble past its timeout is
    /// `TimedOut` (it is checked here: call at least that often).
    pub fn advance(&mut self) -> Result<Progress> {
        let outcome = self.step();
        if outcome.is_err() {
            self.stage = Stage::Over;
        }
        outcome
    }

    fn step(&mut self) -> Result<Progress> {
        loop {
            match &mut self.stage {
                Stage::Over => {
                    return Err(Error::new(
                        ErrorKind::InvalidState,
                        format!("the connection to {} failed or is done", self.addr),
                    ))
                }
                Stage::Tcp {
                    socket,
                    target,
                    deadline,
                } => {
                    let target = *target;
                    match is_connected(socket) {
                        Ok(true) => self.begin_preamble()?,
                        Ok(false) if Instant::now() < *deadline => {
                            return Ok(Progress::Pending { want_write: true })
                        }
                        Ok(false) => {
                            let ms = self.config.connect_timeout.as_millis();
                            let e = Error::new(
                                ErrorKind::TimedOut,
                                format!("connecting to {}: timed out after {ms} ms", self.addr),
                            );
                            self.connect_from(target + 1, Some(e))?;
                        }
                        Err(e) => {
                            let e = self.connect_error(&e);
                            self.connect_from(target + 1, Some(e))?;
                        }
                    }
                }
                Stage::Preamble { .. } => return self.preamble(),
            }
        }
    }

    /// Starts a connect to the first target from `from` that does not fail
    /// at once; none left: `last` (or the last failure) is the error.
    fn connect_from(&mut self, from: usize, mut last: Option<Error>) -> Result<()> {
        self.stage = Stage::Over;
        for target in from..self.targets.len() {
            let addr = &self.targets[target];
            let domain = if addr.is_unix() {
                Domain::UNIX
            } else {
                addr.domain()
            };
            let attempt = Socket::new(domain, Type::STREAM.cloexec(), None).and_then(|s| {
                s.set_nonblocking(true)?;
                match s.connect(addr) {
                    Ok(()) => Ok(s),
                    Err(e) if in_progress(&e) => Ok(s),
                    Err(e) => Err(e),
                }
            });
            match attempt {
                Ok(socket) => {
                    self.stage = Stage::Tcp {
                        socket,
                        target,
                        deadline: Instant::now() + self.config.connect_timeout,
                    };
                    return Ok(());
                }
                Err(e) => last = Some(self.connect_error(&e)),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::new(
                ErrorKind::InvalidAddress,
                format!("{} resolved to no address", self.addr),
            )
        }))
    }

    fn connect_error(&self, e: &io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            return Error::new(
                ErrorKind::ConnectionRefused,
                format!("connecting to {}: no socket at that path", self.addr),
            );
        }
        Error::io(format_args!("connecting to {}", self.addr), e)
    }

    /// The connect is done: the client session starts (its one deadline
    /// from now).
    fn begin_preamble(&mut self) -> Result<()> {
        let Stage::Tcp { socket, target, .. } = std::mem::replace(&mut self.stage, Stage::Over)
        else {
            return Ok(());
        };
        let config = &self.config;
        crate::sys::sockopt::apply_stream(&socket, config.nodelay, config.keepalive)?;
        let nonce = if config.keys.is_empty() {
            [0; NONCE_LEN]
        } else {
            random::nonce()?
        };
        let peer = format_sockaddr(&self.targets[target]);
        let session = Session::new(
            SessionParams {
                role: Role::Client,
                keys: config.keys.clone(),
                proxy: config.proxy_protocol,
                max_frame_size: config.max_frame_size,
                preamble_timeout: config.handshake_timeout,
                tls: config.session_tls(Role::Client, None)?,
            },
            peer.clone(),
            Instant::now(),
            nonce,
        );
        self.stage = Stage::Preamble {
            socket,
            session,
            buf: RecvBuffer::default(),
            out: Vec::new(),
            peer,
        };
        Ok(())
    }

    /// Runs the preamble as far as the socket allows.
    fn preamble(&mut self) -> Result<Progress> {
        let Stage::Preamble {
            socket,
            session,
            buf,
            out,
            ..
        } = &mut self.stage
        else {
            return Ok(Progress::Pending { want_write: false });
        };
        loop {
            session.take_transmit(out);
            while !out.is_empty() {
                match socket.send_with_flags(out, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) {
                    Ok(n) => {
                        out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        check_deadline(session)?;
                        return Ok(Progress::Pending { want_write: true });
                    }
                    Err(e) => {
                        return Err(Error::io(
                            format_args!("sending to {}", session.peer_addr()),
                            &e,
                        ))
                    }
                }
            }
            if session.was_opened() {
                return self.ready();
            }
            match session.poll(buf)? {
                Step::NeedMore(missing) => {
                    let spare = buf.spare(missing.clamp(512, PREAMBLE_READ));
                    match crate::sys::recv(socket.as_raw_fd(), spare, libc::MSG_DONTWAIT) {
                        Ok(0) => return Err(session.end_of_stream(buf)),
                        Ok(n) => buf.commit(n),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // What this poll queued (a handshake answer) goes
                        // out before the wait: the peer waits for it.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if session.wants_transmit() {
                                continue;
                            }
                            check_deadline(session)?;
                            return Ok(Progress::Pending { want_write: false });
                        }
                        Err(e) => {
                            return Err(Error::io(
                                format_args!("receiving from {}", session.peer_addr()),
                                &e,
                            ))
                        }
                    }
                }
                // Open: its last words go out above, then it is ready.
                Step::Open | Step::Proxy { .. } | Step::Frame(_) => {}
            }
        }
    }

    /// The preamble is done and written: the connection, as `connect`
    /// would give it.
    fn ready(&mut self) -> Result<Progress> {
        let Stage::Preamble {
            socket,
            session,
            buf,
            peer,
            ..
        } = std::mem::replace(&mut self.stage, Stage::Over)
        else {
            return Ok(Progress::Pending { want_write: false });
        };
        let conn = Connection::resume(
            socket,
            &self.config,
            session,
            buf.pending(),
            peer,
            Vec::new(),
        )?;
        // A loop's connection: receives and sends never wait.
        conn.set_nonblocking(true);
        Ok(Progress::Ready(conn))
    }
}

/// Whether a non-blocking connect has finished (an error if it failed).
fn is_connected(socket: &Socket) -> io::Result<bool> {
    if let Some(e) = socket.take_error()? {
        return Err(e);
    }
    match socket.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

fn check_deadline(session: &Session) -> Result<()> {
    match session.timed_out(Instant::now()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A [`Connecting`] shared behind a handle (the C API's
/// `sockserv_connect_start`): connecting until [`PendingConnection::advance`]
/// says it is established, then the connection.
pub(crate) struct PendingConnection {
    state: Mutex<State>,
    ready: OnceLock<Connection>,
    fd: AtomicI32,
    addr: String,
}

#[allow(clippy::large_enum_variant)] // One per connection.
enum State {
    Connecting(Connecting),
    Failed(Error),
    Done,
}

impl PendingConnection {
    pub(crate) fn new(connecting: Connecting) -> PendingConnection {
        PendingConnection {
            fd: AtomicI32::new(connecting.fd()),
            addr: connecting.addr().to_string(),
            state: Mutex::new(State::Connecting(connecting)),
            ready: OnceLock::new(),
        }
    }

    /// The connection, once established.
    pub(crate) fn ready(&self) -> Option<&Connection> {
        self.ready.get()
    }

    /// The connection, or why it is not there yet.
    pub(crate) fn connection(&self) -> Result<&Connection> {
        self.ready.get().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidState,
                format!(
                    "the connection to {} is not established: go on connecting until it is (sockserv_conn_continue returns SOCKSERV_OK)",
                    self.addr
                ),
            )
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.ready
            .get()
            .map_or_else(|| self.fd.load(Ordering::Acquire), Connection::fd)
    }

    pub(crate) fn peer_addr(&self) -> &str {
        self.ready.get().map_or(&self.addr, Connection::peer_addr)
    }

    pub(crate) fn local_addr(&self) -> &str {
        self.ready.get().map_or("", Connection::local_addr)
    }

    /// Closes the connection, or gives up connecting (the socket closes).
    pub(crate) fn close(&self) {
        if let Some(conn) = self.ready.get() {
            return conn.close();
        }
        let mut state = lock(&self.state);
        if let State::Connecting(_) = &*state {
            *state = State::Failed(Error::new(
                ErrorKind::Broken,
                format!("the connection to {} was closed locally", self.addr),
            ));
            self.fd.store(-1, Ordering::Release);
        }
    }

    /// See [`Connecting::timeout`]; `None` once established or failed.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        match &*lock(&self.state) {
            State::Connecting(c) => c.timeout(),
            State::Failed(_) | State::Done => None,
        }
    }

    /// One step; `Ok(None)`: established, `Ok(Some(want_write))`: not yet.
    pub(crate) fn advance(&self) -> Result<Option<bool>> {
        if self.ready.get().is_some() {
            return Ok(None);
        }
        let mut state = lock(&self.state);
        let outcome = match &mut *state {
            State::Connecting(c) => c.advance(),
            State::Failed(e) => return Err(e.clone()),
            State::Done => return Ok(None),
        };
        match outcome {
            Ok(Progress::Pending { want_write }) => {
                if let State::Connecting(c) = &*state {
                    self.fd.store(c.fd(), Ordering::Release);
                }
                Ok(Some(want_write))
            }
            Ok(Progress::Ready(conn)) => {
                let _ = self.ready.set(conn);
                *state = State::Done;
                Ok(None)
            }
            Err(e) => {
                *state = State::Failed(e.clone());
                self.fd.store(-1, Ordering::Release);
                Err(e)
            }
        }
    }
}

/// A non-blocking connect that goes on in the background.
fn in_progress(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock
}
