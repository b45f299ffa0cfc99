//! The whole life of one stream connection as a sans-IO state machine:
//!
//! ```text
//! [PROXY header] -> [verify] -> [handshake] -> frames -> end of stream
//!  (server, when    (the app    (with keys,
//!   configured)      decides)    either role)
//! ```
//!
//! A driver (the blocking [`Connection`](crate::stream::connection) and the
//! event-mode I/O thread) reads bytes into a [`RecvBuffer`] it owns and
//! calls [`Session::poll`], which consumes what it can and says what
//! happened ([`Step`]); it writes what [`Session::take_transmit`] gives
//! (handshake frames, wire-encoded), arms a timer for
//! [`Session::deadline`] and, when that passes, closes with
//! [`Session::timed_out`]; at the end of the stream it closes with
//! [`Session::end_of_stream`]. No socket, clock or random source is used
//! here: the time and the handshake nonce come in from the driver, so both
//! drivers get the same sequence, the same single preamble deadline and the
//! same error texts.
//!
//! One deadline covers the whole preamble (PROXY header, verify and the
//! handshake): a peer cannot take a full timeout for each part.
//!
//! Frames are handed out as ranges of the driver's buffer (with TLS, of
//! the decrypted bytes), so delivering one copies and allocates nothing.
//!
//! TLS goes between the PROXY header and the handshake, inside this
//! machine ([`crate::proto::tls`]): the bytes after the PROXY header feed
//! rustls, and frames are decoded from the plaintext it yields, a buffer
//! of the session's own ([`Session::frame`] gives a [`Step::Frame`]'s bytes
//! from whichever buffer holds them). On the way out, [`Session::take_transmit`]
//! carries TLS records (the TLS handshake, then the handshake frames
//! sealed), and the drivers seal the application's encoded frames with
//! [`Session::sealer`] before the socket. Without TLS nothing changes:
//! frames are ranges of the driver's buffer and cost no copy.

use std::io::IoSlice;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::proto::frame::{self, encode_header};
use crate::proto::handshake::{Handshake, Keys, Role, MAX_HANDSHAKE_FRAME, NONCE_LEN};
use crate::proto::proxy::{self, Parsed, ProxyMode};
use crate::proto::recv_buffer::{Decoded, RecvBuffer};
use crate::proto::tls::{looks_like_tls, Sealer, Tls, TlsInfo, TlsParams};

/// What a session is made of; the drivers fill it from the config.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Which side of the handshake this end plays.
    pub role: Role,
    /// Empty: no handshake.
    pub keys: Keys,
    /// Only for the accepting side: a load balancer's header.
    pub proxy: ProxyMode,
    /// The largest frame payload accepted once the preamble is done.
    pub max_frame_size: u64,
    /// The one deadline of the whole preamble.
    pub preamble_timeout: Duration,
    /// TLS, between the PROXY header and the handshake; `None`: plaintext.
    pub tls: Option<TlsParams>,
}

/// Where a session is; a driver counts a failure by the stage it ended in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for a required PROXY header.
    Proxy,
    /// The PROXY header named the client: waiting for [`Session::verified`].
    Verify,
    /// Running the TLS handshake.
    Tls,
    /// Running the handshake (an optional PROXY header may still come).
    Handshake,
    /// The preamble is over; [`Step::Open`] not yet reported.
    Opening,
    /// Frames.
    Open,
    /// Failed; nothing more comes out.
    Failed,
}

/// What [`Session::poll`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing more can be done before more bytes arrive; at least this
    /// many are needed (a hint for the size of the next read).
    NeedMore(usize),
    /// The PROXY header was read; `peer` is the client it names (now also
    /// [`Session::peer_addr`]). With `verify`, the session waits for
    /// [`Session::verified`].
    Proxy {
        /// The client the header names (none for a LOCAL or UNKNOWN one).
        peer: Option<String>,
        /// The application must be asked before the handshake goes on.
        verify: bool,
    },
    /// The preamble is done: the connection is open. Reported once.
    Open,
    /// One whole frame's payload, a range of the driver's buffer (with
    /// TLS, of the session's: read it with [`Session::frame`]).
    Frame(Range<usize>),
}

/// The whole life of one stream connection, sans I/O: the driver feeds it
/// the bytes that arrived and the time, and sends what it yields.
pub struct Session {
    stage: Stage,
    role: Role,
    keys: Keys,
    nonce: [u8; NONCE_LEN],
    /// A PROXY header still expected before the first frame.
    proxy: Option<ProxyMode>,
    handshake: Option<Handshake>,
    max_frame_size: u64,
    deadline: Option<Instant>,
    timeout: Duration,
    /// The peer, as errors name it: the socket's, or the client a PROXY
    /// header named.
    peer: String,
    /// Wire bytes to send (encoded handshake frames).
    transmit: Vec<u8>,
    /// [`Step::Open`] was reported.
    opened: bool,
    /// The stage a failure happened in.
    failed_in: Option<Stage>,
    /// The TLS layer; its plaintext buffer is where frames come from.
    /// Boxed: a plaintext session (most pre-auth ones) carries a pointer,
    /// not the TLS state.
    tls: Option<Box<Tls>>,
    /// A TLS layer that could not be made: the first poll reports it.
    tls_error: Option<Box<Error>>,
    /// A frame (handshake or application) came in: a later bad header is
    /// no TLS hello sent to a plaintext end.
    frames_seen: bool,
}

impl Session {
    /// A session starting `now` with a peer known as `peer`. `nonce` must
    /// come from the operating system's random source when there are keys
    /// (it is not used without).
    pub fn new(
        params: SessionParams,
        peer: String,
        now: Instant,
        nonce: [u8; NONCE_LEN],
    ) -> Session {
        let proxy = match (params.role, params.proxy) {
            (Role::Client, _) | (_, ProxyMode::Off) => None,
            (Role::Server, mode) => Some(mode),
        };
        let has_preamble = proxy.is_some() || !params.keys.is_empty() || params.tls.is_some();
        let (tls, tls_error) = match params.tls.as_ref().map(Tls::new) {
            Some(Ok(tls)) => (Some(Box::new(tls)), None),
            Some(Err(e)) => (None, Some(Box::new(e))),
            None => (None, None),
        };
        let mut session = Session {
            stage: Stage::Opening,
            role: params.role,
            keys: params.keys,
            nonce,
            proxy,
            handshake: None,
            max_frame_size: params.max_frame_size,
            deadline: has_preamble.then(|| now + params.preamble_timeout),
            timeout: params.preamble_timeout,
            peer,
            transmit: Vec::new(),
            opened: false,
            failed_in: None,
            tls,
            tls_error,
            frames_seen: false,
        };
        if proxy == Some(ProxyMode::Required) {
            // Everything waits for the header (and verify on its address).
            session.stage = Stage::Proxy;
        } else {
            session.start_secure();
        }
        session
    }

    /// Whether the session speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// With TLS: what encrypts the application's frames (the driver passes
    /// its encoded frames through it on their way to the socket).
    pub fn sealer(&self) -> Option<&Sealer> {
        self.tls.as_deref().map(Tls::sealer)
    }

    /// What the TLS handshake negotiated, once it is done.
    pub fn tls_info(&self) -> Option<&TlsInfo> {
        self.tls.as_deref().and_then(Tls::info)
    }

    /// The bytes of a [`Step::Frame`]: `buf` is the driver's buffer, the
    /// one given to [`Session::poll`] (with TLS they are in the session's).
    pub fn frame<'a>(&'a self, buf: &'a RecvBuffer, frame: Range<usize>) -> &'a [u8] {
        self.frame_buffer(buf).bytes(frame)
    }

    /// The buffer frames are decoded from: the session's plaintext with
    /// TLS, else the driver's `buf`.
    pub fn frame_buffer<'a>(&'a self, buf: &'a RecvBuffer) -> &'a RecvBuffer {
        match &self.tls {
            Some(tls) => &tls.plain,
            None => buf,
        }
    }

    /// As [`Session::frame_buffer`], to give a frame back
    /// ([`RecvBuffer::unconsume`]).
    pub fn frame_buffer_mut<'a>(&'a mut self, buf: &'a mut RecvBuffer) -> &'a mut RecvBuffer {
        match &mut self.tls {
            Some(tls) => &mut tls.plain,
            None => buf,
        }
    }

    /// Whether decrypted bytes wait in the session (frames a driver left
    /// for a later turn: the socket has nothing more to say about them).
    pub fn holds_plaintext(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| !t.plain.pending().is_empty())
    }

    /// Frees the session's own buffer when it holds nothing and is larger
    /// than `keep` (an idle connection keeps little).
    pub fn release_if_idle(&mut self, keep: usize) {
        if let Some(tls) = &mut self.tls {
            tls.plain.release_if_idle(keep);
        }
    }

    /// Where the session is now.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// [`Step::Open`] was reported: the application has the connection
    /// (and hears of its end), whatever happened since.
    pub fn was_opened(&self) -> bool {
        self.opened
    }

    /// The stage the session failed in, or is in: what a driver counts a
    /// connection that ends before it opened as.
    pub fn failure_stage(&self) -> Stage {
        self.failed_in.unwrap_or(self.stage)
    }

    /// The peer as errors name it.
    pub fn peer_addr(&self) -> &str {
        &self.peer
    }

    /// When the preamble must be done by; `None` once it is (or when there
    /// is none).
    pub fn deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Proxy | Stage::Verify | Stage::Tls | Stage::Handshake => self.deadline,
            _ => None,
        }
    }

    /// The close reason once `now` is past the preamble deadline.
    pub fn timed_out(&self, now: Instant) -> Option<Error> {
        let deadline = self.deadline()?;
        if now < deadline {
            return None;
        }
        let ms = self.timeout.as_millis();
        let what = match self.stage {
            Stage::Proxy => "waiting for the PROXY protocol header from",
            Stage::Tls => "TLS handshake with",
            _ => "handshake with",
        };
        Some(Error::new(
            ErrorKind::TimedOut,
            format!("{what} {}: timed out after {ms} ms", self.peer),
        ))
    }

    /// Appends the bytes to send to `out`; true if there were any.
    pub fn take_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.transmit.is_empty() {
            return false;
        }
        if out.is_empty() {
            // Hand the storage over: a waiting session holds none.
            std::mem::swap(out, &mut self.transmit);
        } else {
            out.append(&mut self.transmit);
        }
        true
    }

    /// Whether bytes wait to be sent.
    pub fn wants_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// The application's verdict on [`Session::peer_addr`] after a
    /// [`Step::Proxy`] that asked for it. Refused: the session fails, with
    /// no reason to report (verify counts its refusals).
    pub fn verified(&mut self, ok: bool) {
        if self.stage != Stage::Verify {
            return;
        }
        if ok {
            self.start_secure();
        } else {
            self.set_failed();
        }
    }

    /// Consumes what it can of `buf` and says what happened. An error ends
    /// the session: close the connection with it (after writing what
    /// [`Session::take_transmit`] still has: a handshake's `#FAILURE#`).
    pub fn poll(&mut self, buf: &mut RecvBuffer) -> Result<Step> {
        match self.stage {
            Stage::Failed => {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    format!("the session with {} has failed", self.peer),
                ))
            }
            Stage::Verify => return Ok(Step::NeedMore(0)),
            Stage::Opening => {
                self.stage = Stage::Open;
                self.opened = true;
                return Ok(Step::Open);
            }
            Stage::Proxy | Stage::Tls | Stage::Handshake | Stage::Open => {}
        }
        if let Some(e) = self.tls_error.take() {
            return Err(self.fail(*e));
        }
        if self.proxy.is_some() {
            if let Some(step) = self.take_proxy_header(buf)? {
                return Ok(step);
            }
        }
        if self.tls.is_some() {
            if let Some(step) = self.run_tls(buf)? {
                return Ok(step);
            }
        }
        let max = if self.handshake.is_some() {
            MAX_HANDSHAKE_FRAME
        } else {
            self.max_frame_size
        };
        let frames = match &mut self.tls {
            Some(tls) => &mut tls.plain,
            None => &mut *buf,
        };
        let frame = match frames.next_frame(max) {
            Ok(Decoded::Frame(frame)) => frame,
            Ok(Decoded::NeedMore(n)) => return Ok(Step::NeedMore(n)),
            Err(e) => {
                let e = if !self.frames_seen && looks_like_tls(frames.pending()) {
                    Error::new(
                        ErrorKind::Tls,
                        format!("{} speaks TLS and this end does not: use tls:// on both ends (or on neither)", self.peer),
                    )
                } else {
                    e
                };
                return Err(self.fail(e));
            }
        };
        self.frames_seen = true;
        let Some(hs) = &mut self.handshake else {
            return Ok(Step::Frame(frame));
        };
        let frames = match &self.tls {
            Some(tls) => &tls.plain,
            None => &*buf,
        };
        let step = hs.receive(frames.bytes(frame));
        self.queue_handshake_frames();
        if let Err(e) = step {
            return Err(self.fail(e));
        }
        if self.handshake.as_ref().is_some_and(Handshake::is_done) {
            self.handshake = None;
            self.stage = Stage::Open;
            self.opened = true;
            return Ok(Step::Open);
        }
        // More handshake messages may already be buffered.
        self.poll(buf)
    }

    /// Feeds the bytes in `buf` to the TLS layer and, while its handshake
    /// runs, sends what it answers: `Some(step)` when the driver must hear
    /// of it (more bytes needed, or the connection open).
    fn run_tls(&mut self, buf: &mut RecvBuffer) -> Result<Option<Step>> {
        let tls = self.tls.as_mut().expect("a TLS session");
        let received = tls.receive(buf);
        if let Err(e) = received {
            // The alert rustls has for the peer goes out before the close.
            tls.write_tls(&mut self.transmit);
            return Err(self.fail(e));
        }
        if self.stage != Stage::Tls {
            return Ok(None);
        }
        tls.write_tls(&mut self.transmit);
        if tls.is_handshaking() {
            return Ok(Some(Step::NeedMore(1)));
        }
        tls.finish_handshake();
        self.start_handshake();
        if self.stage == Stage::Opening {
            self.stage = Stage::Open;
            self.opened = true;
            return Ok(Some(Step::Open));
        }
        Ok(None)
    }

    /// The close reason for an end of stream with `buf` holding what is
    /// left: a clean close, or one in the middle of a frame (or of the
    /// preamble).
    pub fn end_of_stream(&self, buf: &RecvBuffer) -> Error {
        let peer = &self.peer;
        if self.stage == Stage::Tls {
            return Error::new(
                ErrorKind::Tls,
                format!("TLS handshake with {peer}: it closed the connection (does it speak TLS? a plaintext end closes on a TLS hello)"),
            );
        }
        let buf = self.frame_buffer(buf);
        let have = buf.pending().len();
        let e = if have == 0 {
            Error::new(ErrorKind::Closed, format!("{peer} closed the connection"))
        } else {
            let expected = if self.proxy.is_some() {
                "of a PROXY protocol header".to_string()
            } else {
                match frame::decode_header(buf.pending(), u64::MAX) {
                    Ok(Some(h)) => format!("of a {} byte frame", h.frame_len()),
                    _ => "of a frame header".to_string(),
                }
            };
            Error::new(
                ErrorKind::TruncatedFrame,
                format!(
                    "{peer} closed the connection in the middle of a frame: {have} bytes received {expected}"
                ),
            )
        };
        match self.stage {
            Stage::Handshake => e.context(format!("handshake with {peer}")),
            _ => e,
        }
    }

    /// After the PROXY header: the TLS handshake first (a client's hello
    /// is ready to send), or the handshake at once.
    fn start_secure(&mut self) {
        if let Some(tls) = &self.tls {
            self.stage = Stage::Tls;
            tls.write_tls(&mut self.transmit);
        } else if self.tls_error.is_some() {
            // Reported by the next poll.
            self.stage = Stage::Tls;
        } else {
            self.start_handshake();
        }
    }

    fn start_handshake(&mut self) {
        if self.keys.is_empty() {
            self.stage = Stage::Opening;
            return;
        }
        self.handshake = Some(Handshake::new(self.role, self.keys.clone(), self.nonce));
        self.nonce = [0; NONCE_LEN];
        self.stage = Stage::Handshake;
        self.queue_handshake_frames();
    }

    fn queue_handshake_frames(&mut self) {
        let Some(hs) = &mut self.handshake else {
            return;
        };
        let Some(sealer) = self.tls.as_deref().map(Tls::sealer) else {
            while let Some(msg) = hs.poll_transmit() {
                self.transmit
                    .extend_from_slice(encode_header(msg.len() as u64).as_bytes());
                self.transmit.extend_from_slice(&msg);
            }
            return;
        };
        while let Some(msg) = hs.poll_transmit() {
            let header = encode_header(msg.len() as u64);
            let parts = [IoSlice::new(header.as_bytes()), IoSlice::new(&msg)];
            // A failed TLS session has its error reported by the next poll.
            let _ = sealer.seal(&parts, &mut self.transmit);
        }
    }

    /// Consumes the PROXY header at the start of `buf`: `Some(step)` when
    /// the driver must hear about it (more bytes needed, or the header).
    fn take_proxy_header(&mut self, buf: &mut RecvBuffer) -> Result<Option<Step>> {
        let Some(mode) = self.proxy else {
            return Ok(None);
        };
        let mut peer = None;
        match proxy::parse(buf.pending()) {
            Ok(Parsed::NeedMore) => return Ok(Some(Step::NeedMore(1))),
            Ok(Parsed::Header { len, source }) => {
                buf.consume(len);
                if let Some(source) = source {
                    let named = format!("tcp://{source}");
                    self.peer = named.clone();
                    peer = Some(named);
                }
            }
            Ok(Parsed::Absent) if mode == ProxyMode::Optional => {}
            Ok(Parsed::Absent) => {
                self.set_failed();
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "{} sent no PROXY protocol header, which this server requires",
                        self.peer
                    ),
                ));
            }
            Err(e) => {
                self.set_failed();
                return Err(e.context(format!("connection from {}", self.peer)));
            }
        }
        self.proxy = None;
        let verify = mode == ProxyMode::Required;
        if verify {
            self.stage = Stage::Verify;
        } else if peer.is_none() {
            // Optional and absent, or naming no client: nothing to report.
            return Ok(None);
        }
        Ok(Some(Step::Proxy { peer, verify }))
    }

    /// Ends the session with `e`, named after the stage it happened in.
    fn fail(&mut self, e: Error) -> Error {
        let e = self.in_context(e);
        self.set_failed();
        e
    }

    fn set_failed(&mut self) {
        if self.stage != Stage::Failed {
            self.failed_in = Some(self.stage);
            self.stage = Stage::Failed;
        }
    }

    fn in_context(&self, e: Error) -> Error {
        match self.stage {
            Stage::Handshake => e.context(format!("handshake with {}", self.peer)),
            Stage::Tls => e.context(format!("TLS handshake with {}", self.peer)),
            Stage::Proxy => e,
            _ => e.context(format!("receiving from {}", self.peer)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::handshake::{CHALLENGE, FAILURE};
    use std::sync::Arc;

    fn params(keys: &[&[u8]], proxy: ProxyMode) -> SessionParams {
        SessionParams {
            role: Role::Server,
            keys: Arc::from(keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>()),
            proxy,
            max_frame_size: 1 << 20,
            preamble_timeout: Duration::from_secs(1),
            tls: None,
        }
    }

    /// A server session for peer "p" made now, with an all-zero nonce.
    fn session(keys: &[&[u8]], proxy: ProxyMode) -> Session {
        Session::new(
            params(keys, proxy),
            "p".into(),
            Instant::now(),
            [0; NONCE_LEN],
        )
    }

    fn feed(buf: &mut RecvBuffer, bytes: &[u8]) {
        buf.extend(bytes);
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = encode_header(payload.len() as u64).as_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn without_preamble_it_opens_at_once_and_hands_out_frames() {
        let mut s = session(&[], ProxyMode::Off);
        assert_eq!(s.deadline(), None);
        let mut buf = RecvBuffer::default();
        assert_eq!(s.poll(&mut buf).unwrap(), Step::Open);
        feed(&mut buf, &framed(b"one"));
        feed(&mut buf, &framed(b"two")[..5]);
        let Step::Frame(r) = s.poll(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(buf.bytes(r), b"one");
        assert!(matches!(s.poll(&mut buf).unwrap(), Step::NeedMore(_)));
        let e = s.end_of_stream(&buf);
        assert_eq!(e.kind(), ErrorKind::TruncatedFrame);
        assert!(
            e.detail().contains("5 bytes received of a 7 byte frame"),
            "{e}"
        );
    }

    #[test]
    fn a_server_with_keys_challenges_first_and_one_deadline_covers_the_preamble() {
        let now = Instant::now();
        let mut s = Session::new(
            params(&[b"k"], ProxyMode::Required),
            "tcp://1.2.3.4:5".into(),
            now,
            [7; NONCE_LEN],
        );
        // Nothing before the PROXY header.
        assert!(!s.wants_transmit());
        assert_eq!(s.deadline(), Some(now + Duration::from_secs(1)));
        let mut buf = RecvBuffer::default();
        assert_eq!(s.poll(&mut buf).unwrap(), Step::NeedMore(1));
        feed(&mut buf, b"PROXY TCP4 9.9.9.9 1.2.3.4 1000 5\r\n");
        assert_eq!(
            s.poll(&mut buf).unwrap(),
            Step::Proxy {
                peer: Some("tcp://9.9.9.9:1000".into()),
                verify: true
            }
        );
        s.verified(true);
        let mut out = Vec::new();
        assert!(s.take_transmit(&mut out));
        assert!(out.windows(CHALLENGE.len()).any(|w| w == CHALLENGE));
        // The same deadline, not a new one for the handshake.
        assert_eq!(s.deadline(), Some(now + Duration::from_secs(1)));
        assert!(s.timed_out(now + Duration::from_millis(999)).is_none());
        let e = s.timed_out(now + Duration::from_secs(1)).unwrap();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        assert!(
            e.detail().contains("handshake with tcp://9.9.9.9:1000"),
            "{e}"
        );
        // A wrong answer: #FAILURE# to send, then the error.
        feed(&mut buf, &framed(b"{sha256}wrongwrongwrongwrongwrongwrong"));
        let e = s.poll(&mut buf).unwrap_err();
        assert!(e.detail().starts_with("handshake with"), "{e}");
        let mut out = Vec::new();
        s.take_transmit(&mut out);
        assert!(out.ends_with(FAILURE));
        assert_eq!(s.stage(), Stage::Failed);
        assert_eq!(s.failure_stage(), Stage::Handshake);
        assert!(!s.was_opened());
    }

    #[test]
    fn verify_refusal_fails_quietly() {
        let mut s = session(&[], ProxyMode::Required);
        let mut buf = RecvBuffer::default();
        feed(&mut buf, b"PROXY UNKNOWN\r\n");
        assert_eq!(
            s.poll(&mut buf).unwrap(),
            Step::Proxy {
                peer: None,
                verify: true
            }
        );
        s.verified(false);
        assert_eq!(s.stage(), Stage::Failed);
    }

    #[test]
    fn required_header_absent_is_refused() {
        let mut s = session(&[], ProxyMode::Required);
        let mut buf = RecvBuffer::default();
        feed(&mut buf, &framed(b"hello"));
        let e = s.poll(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.detail().contains("sent no PROXY protocol header"), "{e}");
    }

    /// TLS configs for a server with a certificate for "localhost" and a
    /// client trusting its CA (self-signed here).
    fn tls_pair() -> (TlsParams, TlsParams) {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (
            TlsParams::Server(Arc::new(server)),
            TlsParams::Client(
                Arc::new(client),
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            ),
        )
    }

    fn tls_session(role: Role, tls: TlsParams, keys: &[&[u8]], proxy: ProxyMode) -> Session {
        let mut p = params(keys, proxy);
        p.role = role;
        p.tls = Some(tls);
        Session::new(
            p,
            format!("{role:?}"),
            Instant::now(),
            [role as u8; NONCE_LEN],
        )
    }

    /// Moves what `from` has to send into `to_buf` and polls `to` until it
    /// needs more; the steps it reported.
    fn pump(from: &mut Session, to: &mut Session, to_buf: &mut RecvBuffer) -> Result<Vec<Step>> {
        let mut wire = Vec::new();
        from.take_transmit(&mut wire);
        to_buf.extend(&wire);
        let mut steps = Vec::new();
        for _ in 0..100 {
            match to.poll(to_buf)? {
                Step::NeedMore(_) => return Ok(steps),
                step => steps.push(step),
            }
        }
        panic!("the session never asked for more")
    }

    /// A client and a server session over memory: PROXY header, TLS, the
    /// HMAC handshake inside it, then frames both ways, sealed.
    #[test]
    fn a_client_and_a_server_speak_tls_and_hmac_through_memory() {
        let (server_tls, client_tls) = tls_pair();
        let mut server = tls_session(Role::Server, server_tls, &[b"k"], ProxyMode::Optional);
        let mut client = tls_session(Role::Client, client_tls, &[b"k"], ProxyMode::Off);
        assert_eq!(server.stage(), Stage::Tls);
        assert!(client.deadline().is_some());
        let (mut sbuf, mut cbuf) = (RecvBuffer::default(), RecvBuffer::default());
        // A PROXY header before the TLS hello.
        sbuf.extend(b"PROXY TCP4 9.9.9.9 1.2.3.4 1000 5\r\n");
        let mut opened = (false, false);
        for _ in 0..10 {
            for step in pump(&mut client, &mut server, &mut sbuf).unwrap() {
                opened.0 |= step == Step::Open;
            }
            for step in pump(&mut server, &mut client, &mut cbuf).unwrap() {
                opened.1 |= step == Step::Open;
            }
            if opened == (true, true) {
                break;
            }
        }
        assert_eq!(opened, (true, true));
        assert_eq!(server.peer_addr(), "tcp://9.9.9.9:1000");
        assert_eq!(server.tls_info().unwrap().version, 0x0304);
        assert!(server.tls_info().unwrap().peer_cert.is_none());
        assert!(client.tls_info().unwrap().peer_cert.is_some());
        // Frames, many in one seal: they come out one by one.
        let mut plain = Vec::new();
        for payload in [&b"one"[..], b"two", b"three"] {
            plain.extend_from_slice(&framed(payload));
        }
        let mut wire = Vec::new();
        client
            .sealer()
            .unwrap()
            .seal(&[IoSlice::new(&plain)], &mut wire)
            .unwrap();
        assert!(!wire.windows(3).any(|w| w == b"two"), "sealed");
        sbuf.extend(&wire);
        let mut got = Vec::new();
        while let Step::Frame(r) = server.poll(&mut sbuf).unwrap() {
            got.push(server.frame(&sbuf, r).to_vec());
        }
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        // One flipped bit: a TLS error, and an alert to send.
        let mut wire = Vec::new();
        client
            .sealer()
            .unwrap()
            .seal(&[IoSlice::new(&framed(b"four"))], &mut wire)
            .unwrap();
        let mid = wire.len() / 2;
        wire[mid] ^= 1;
        sbuf.extend(&wire);
        let e = server.poll(&mut sbuf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(e.detail().contains("bad record MAC"), "{e}");
        assert!(server.wants_transmit(), "the alert");
    }

    #[test]
    fn a_tls_handshake_past_the_deadline_says_so() {
        let (server_tls, _) = tls_pair();
        let now = Instant::now();
        let s = tls_session(Role::Server, server_tls, &[], ProxyMode::Off);
        assert_eq!(s.stage(), Stage::Tls);
        let e = s.timed_out(now + Duration::from_secs(2)).unwrap();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        assert!(e.detail().starts_with("TLS handshake with Server"), "{e}");
        let e = s.end_of_stream(&RecvBuffer::default());
        assert_eq!(e.kind(), ErrorKind::Tls);
    }

    #[test]
    fn plaintext_to_a_tls_server_and_a_tls_hello_to_a_plaintext_one() {
        let (server_tls, client_tls) = tls_pair();
        let mut server = tls_session(Role::Server, server_tls, &[], ProxyMode::Off);
        let mut buf = RecvBuffer::default();
        buf.extend(&framed(b"hello"));
        let e = server.poll(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(e.detail().contains("not TLS"), "{e}");
        // A plaintext server receiving a client hello.
        let mut client = tls_session(Role::Client, client_tls, &[], ProxyMode::Off);
        let mut plain = session(&[], ProxyMode::Off);
        let mut buf = RecvBuffer::default();
        assert_eq!(plain.poll(&mut buf).unwrap(), Step::Open);
        let e = pump(&mut client, &mut plain, &mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls);
        assert!(
            e.detail().contains("speaks TLS and this end does not"),
            "{e}"
        );
    }
}
