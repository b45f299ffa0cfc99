//! The one error type of the crate: a kind (what a caller can branch on) and a
//! detail (what a human needs: the address, the OS error, the two sizes).

use std::fmt;
use std::io;

/// What went wrong, coarse enough to branch on. The C API maps each kind to
/// one `sockserv_result` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A required pointer argument was NULL (C API).
    NullParameter,
    /// An argument is out of range or malformed.
    InvalidArgument,
    /// The address could not be parsed or resolved.
    InvalidAddress,
    /// The address is already in use.
    AddressInUse,
    /// Nobody accepts connections at the address.
    ConnectionRefused,
    /// The operation did not finish within its timeout.
    TimedOut,
    /// The peer closed the connection (between frames).
    Closed,
    /// The peer closed in the middle of a frame.
    TruncatedFrame,
    /// A frame is larger than the maximum frame size.
    FrameTooLarge,
    /// The peer broke the framing (or PROXY) protocol.
    Protocol,
    /// Authentication failed: the keys do not match.
    AuthFailed,
    /// The peer broke or downgraded the handshake.
    AuthProtocol,
    /// The caller's buffer is too small; the needed size was reported.
    InsufficientSize,
    /// The server is shutting down.
    Shutdown,
    /// The call is not allowed in the object's current state.
    InvalidState,
    /// The connection is unusable after an earlier failure.
    Broken,
    /// Another operating system error.
    Io,
    /// A panic was caught at the C API boundary.
    Panic,
    /// The operation would block; try again later.
    WouldBlock,
    /// A datagram is larger than the maximum datagram size.
    DatagramTooLarge,
    /// The TLS layer failed: the peer does not speak TLS (or speaks it to
    /// a plaintext end), a record was corrupted or forged, a fatal alert,
    /// no common version, cipher suite or ALPN protocol.
    Tls,
    /// A certificate was refused: unknown issuer, expired or not yet
    /// valid, name mismatch, a required client certificate missing.
    Certificate,
}

impl ErrorKind {
    /// Every kind, in the order of their C codes.
    pub const ALL: [ErrorKind; 22] = [
        ErrorKind::NullParameter,
        ErrorKind::InvalidArgument,
        ErrorKind::InvalidAddress,
        ErrorKind::AddressInUse,
        ErrorKind::ConnectionRefused,
        ErrorKind::TimedOut,
        ErrorKind::Closed,
        ErrorKind::TruncatedFrame,
        ErrorKind::FrameTooLarge,
        ErrorKind::Protocol,
        ErrorKind::AuthFailed,
        ErrorKind::AuthProtocol,
        ErrorKind::InsufficientSize,
        ErrorKind::Shutdown,
        ErrorKind::InvalidState,
        ErrorKind::Broken,
        ErrorKind::Io,
        ErrorKind::Panic,
        ErrorKind::WouldBlock,
        ErrorKind::DatagramTooLarge,
        ErrorKind::Tls,
        ErrorKind::Certificate,
    ];

    /// Static text for the kind; the detail of one failure is in [`Error`].
    pub fn description(self) -> &'static str {
        match self {
            ErrorKind::NullParameter => "a required pointer argument was NULL",
            ErrorKind::InvalidArgument => "an argument is out of range or malformed",
            ErrorKind::InvalidAddress => "the address could not be parsed or resolved",
            ErrorKind::AddressInUse => "the address is already in use",
            ErrorKind::ConnectionRefused => "the peer refused the connection",
            ErrorKind::TimedOut => "the operation timed out",
            ErrorKind::Closed => "the connection was closed",
            ErrorKind::TruncatedFrame => "the connection ended in the middle of a frame",
            ErrorKind::FrameTooLarge => "a frame is larger than the maximum frame size",
            ErrorKind::Protocol => "the peer broke the framing protocol",
            ErrorKind::AuthFailed => "authentication failed: the keys do not match",
            ErrorKind::AuthProtocol => "the peer broke or downgraded the authentication handshake",
            ErrorKind::InsufficientSize => "the buffer is too small; the needed size was reported",
            ErrorKind::Shutdown => "the server is shutting down",
            ErrorKind::InvalidState => "the call is not allowed in the object's current state",
            ErrorKind::Broken => "the connection is unusable after an earlier failure",
            ErrorKind::Io => "an operating system error occurred",
            ErrorKind::Panic => "an internal error (panic) was caught at the API boundary",
            ErrorKind::WouldBlock => "the operation would block: try again later",
            ErrorKind::DatagramTooLarge => {
                "a datagram is larger than the maximum datagram size: not sent, or discarded"
            }
            ErrorKind::Tls => {
                "the TLS layer failed: not TLS, a corrupted record, a fatal alert or nothing in common"
            }
            ErrorKind::Certificate => {
                "a certificate was refused: unknown issuer, expired, wrong name or missing"
            }
        }
    }
}

/// A failure with its kind and a sentence of detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    detail: String,
}

/// A result with sockserv's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error of `kind` with its detail text.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Error {
        Error {
            kind,
            detail: detail.into(),
        }
    }

    /// An OS error, classified, with what was being done when it happened.
    pub fn io(context: impl fmt::Display, err: &io::Error) -> Error {
        Error::new(io_kind(err), format!("{context}: {err}"))
    }

    /// The same error, its detail prefixed with what was being done.
    pub fn context(self, doing: impl fmt::Display) -> Error {
        Error::new(self.kind, format!("{doing}: {}", self.detail))
    }

    /// The same detail under another kind.
    pub fn with_kind(self, kind: ErrorKind) -> Error {
        Error { kind, ..self }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The detail: what was being done, the address, the OS error.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Error {}

fn io_kind(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectionRefused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::TimedOut,
        io::ErrorKind::AddrInUse => ErrorKind::AddressInUse,
        io::ErrorKind::AddrNotAvailable => ErrorKind::InvalidAddress,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::NotConnected
        | io::ErrorKind::UnexpectedEof => ErrorKind::Closed,
        _ => ErrorKind::Io,
    }
}

/// A peer the library turned away: a failed PROXY header or handshake (a
/// wrong key, MD5, an unknown digest...), a verify callback's or the
/// connection cap's refusal, a sealed datagram dropped. What a server's
/// counters count, one by one, with who and why.
#[derive(Debug)]
pub struct Refusal<'a> {
    /// The peer's address ("tcp://IP:PORT", "unix://...", "udp://IP:PORT";
    /// the client's when a PROXY header named it).
    pub peer: &'a str,
    /// Why: the kind of the error the peer was refused with.
    pub kind: ErrorKind,
    /// The detail text, as [`Error::detail`] gives it.
    pub detail: &'a str,
}

/// Receives every refusal in the process; see [`set_refusal_log`].
pub type RefusalLog = std::sync::Arc<dyn Fn(&Refusal<'_>) + Send + Sync>;

static REFUSAL_LOG: std::sync::RwLock<Option<RefusalLog>> = std::sync::RwLock::new(None);

/// Sets (or with `None` removes) the process-wide refusal log, like
/// SQLite's `SQLITE_CONFIG_LOG`: called for each refusal of every server
/// and datagram socket, on the thread that refused (accept, connection, I/O
/// or receiving thread), concurrently. Keep it quick: it runs where the
/// refusal happened, once per forged datagram in a flood too.
pub fn set_refusal_log(log: Option<RefusalLog>) {
    *REFUSAL_LOG.write().unwrap_or_else(|p| p.into_inner()) = log;
}

/// Reports a refusal to the log, if one is set. A server shutting down is
/// not a refusal.
pub(crate) fn log_refusal(peer: &str, kind: ErrorKind, detail: &str) {
    if kind == ErrorKind::Shutdown {
        return;
    }
    let log = REFUSAL_LOG
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(log) = log {
        log(&Refusal { peer, kind, detail });
    }
}
