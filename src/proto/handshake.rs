//! The challenge-response handshake of `multiprocessing.connection` (Python
//! 3.12+), for both roles, as a state machine: frames go in through
//! [`Handshake::receive`], frames to send come out of
//! [`Handshake::poll_transmit`]. No sockets, no clock, no randomness of its
//! own (the nonces are given), so drivers and tests feed it as they like.
//!
//! The accepting side (server) challenges first; once the connecting side
//! (client) has proved it knows the key, the client challenges back.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::proto::mac::Digest;

/// The prefix of the challenge message.
pub const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// The message that accepts a response.
pub const WELCOME: &[u8] = b"#WELCOME#";
/// The message that refuses a response.
pub const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in each challenge.
pub const NONCE_LEN: usize = 40;
/// Every handshake frame is refused above this size, as Python does.
pub const MAX_HANDSHAKE_FRAME: u64 = 256;
/// The shortest challenge body an answering side accepts (Python's rule).
const MIN_CHALLENGE_BODY: usize = 20;
/// Unprefixed legacy messages: a 20-byte challenge or a 16-byte MD5 response.
const LEGACY_LENGTHS: [usize; 2] = [16, 20];
/// Python reads at most this many bytes of digest name between the braces.
const MAX_DIGEST_NAME: usize = 20;
/// The digest of the challenges sockserv sends.
const CHALLENGE_DIGEST: Digest = Digest::Sha256;

/// The shared keys. A server accepts a response made with any of them
/// (rotation); a client answers and verifies with the first.
pub type Keys = Arc<[Vec<u8>]>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// Which side of the handshake a connection plays.
pub enum Role {
    /// The accepting side: challenges first.
    Server,
    /// The connecting side: answers first.
    Client,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// We sent a challenge and wait for the peer's response to it.
    AwaitResponse,
    /// We wait for the peer's challenge.
    AwaitChallenge,
    /// We answered the peer's challenge and wait for its verdict.
    AwaitVerdict,
    Done,
    Failed,
}

/// The sans-IO challenge-response handshake of one side: feed it the
/// peer's messages, send what it yields.
pub struct Handshake {
    role: Role,
    keys: Keys,
    /// The key that authenticated the peer (server) or that we use (client).
    key_index: usize,
    /// The body of our challenge: the digest tag and the nonce.
    our_challenge: Vec<u8>,
    state: State,
    outbox: VecDeque<Vec<u8>>,
}

impl Handshake {
    /// Starts a handshake. `keys` must not be empty; `nonce` must come from
    /// the operating system's random source.
    pub fn new(role: Role, keys: Keys, nonce: [u8; NONCE_LEN]) -> Handshake {
        assert!(!keys.is_empty(), "a handshake needs a key");
        let mut our_challenge = format!("{{{}}}", CHALLENGE_DIGEST.name()).into_bytes();
        our_challenge.extend_from_slice(&nonce);
        let mut hs = Handshake {
            role,
            keys,
            key_index: 0,
            our_challenge,
            state: State::AwaitChallenge,
            outbox: VecDeque::new(),
        };
        if role == Role::Server {
            hs.send_challenge();
        }
        hs
    }

    /// The next frame to send, if any. Drain this after `new` and after every
    /// `receive`, also after one that failed (it may queue `#FAILURE#`).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let msg = self.outbox.pop_front();
        if self.outbox.is_empty() {
            // A connection waits long between messages: hold no spare room.
            self.outbox = VecDeque::new();
        }
        msg
    }

    /// Both sides proved they know the key.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds one frame from the peer.
    pub fn receive(&mut self, msg: &[u8]) -> Result<()> {
        let step = match self.state {
            State::AwaitChallenge => self.on_challenge(msg),
            State::AwaitVerdict => self.on_verdict(msg),
            State::AwaitResponse => self.on_response(msg),
            State::Done | State::Failed => Err(Error::new(
                ErrorKind::InvalidState,
                "the handshake has already ended",
            )),
        };
        if step.is_err() {
            self.state = State::Failed;
        }
        step
    }

    fn send_challenge(&mut self) {
        self.outbox
            .push_back([CHALLENGE, &self.our_challenge].concat());
        self.state = State::AwaitResponse;
    }

    fn on_challenge(&mut self, msg: &[u8]) -> Result<()> {
        let Some(body) = msg.strip_prefix(CHALLENGE) else {
            return Err(auth_protocol(format!(
                "expected a {} message from the peer, got {}",
                show(CHALLENGE),
                show(msg)
            )));
        };
        if body.len() < MIN_CHALLENGE_BODY {
            return Err(auth_protocol(format!(
                "the peer's challenge is too short: {} bytes, at least {MIN_CHALLENGE_BODY} needed",
                body.len()
            )));
        }
        if body == self.our_challenge.as_slice() {
            return Err(auth_protocol(
                "the peer sent our own challenge back (reflection)",
            ));
        }
        let (digest, _nonce) = split_digest(body, "challenge")?;
        let key = &self.keys[self.key_index];
        let mut response = format!("{{{}}}", digest.name()).into_bytes();
        response.extend_from_slice(&digest.mac(key, body));
        self.outbox.push_back(response);
        self.state = State::AwaitVerdict;
        Ok(())
    }

    fn on_verdict(&mut self, msg: &[u8]) -> Result<()> {
        if msg == FAILURE {
            return Err(Error::new(
                ErrorKind::AuthFailed,
                "authentication failed: the peer rejected our response (the keys do not match)",
            ));
        }
        if msg != WELCOME {
            return Err(auth_protocol(format!(
                "expected {} or {} from the peer, got {}",
                show(WELCOME),
                show(FAILURE),
                show(msg)
            )));
        }
        match self.role {
            Role::Server => self.state = State::Done,
            Role::Client => self.send_challenge(),
        }
        Ok(())
    }

    fn on_response(&mut self, msg: &[u8]) -> Result<()> {
        let verdict = self.check_response(msg);
        self.outbox
            .push_back(if verdict.is_ok() { WELCOME } else { FAILURE }.to_vec());
        verdict?;
        self.state = match self.role {
            Role::Server => State::AwaitChallenge,
            Role::Client => State::Done,
        };
        Ok(())
    }

    fn check_response(&mut self, msg: &[u8]) -> Result<()> {
        let (digest, tag) = split_digest(msg, "response")?;
        let challenge = &self.our_challenge;
        let candidates: Vec<usize> = match self.role {
            Role::Server => (0..self.keys.len()).collect(),
            Role::Client => vec![self.key_index],
        };
        // Every candidate key is tried, so the time taken does not depend on
        // which one (if any) matched.
        let mut matched = None;
        for i in candidates {
            if digest.verify(&self.keys[i], challenge, tag) && matched.is_none() {
                matched = Some(i);
            }
        }
        match matched {
            Some(i) => {
                self.key_index = i;
                Ok(())
            }
            None => Err(Error::new(
                ErrorKind::AuthFailed,
                "authentication failed: the peer's response does not match the key",
            )),
        }
    }
}

/// Splits `{digest}rest`, refusing MD5, the unprefixed legacy form and
/// digests sockserv does not speak, each with its own message.
fn split_digest<'m>(msg: &'m [u8], what: &str) -> Result<(Digest, &'m [u8])> {
    if LEGACY_LENGTHS.contains(&msg.len()) {
        // Python decides by length alone: a 16- or 20-byte message is the
        // legacy HMAC-MD5 form even when it starts with a tag, so a tagged
        // one of those lengths is a malformed (or MD5) message, not a
        // {sha256} one; the detail says which the peer sent.
        return Err(auth_protocol(match tag_of(msg) {
            Some(tag) => format!(
                "the peer's {what} is {} bytes long with a {{{tag}}} prefix: Python reads any {what} of that length as the legacy HMAC-MD5 form, whatever its prefix, so it is refused (a {what} must be longer, e.g. {{sha256}} and a 40-byte nonce)",
                msg.len()
            ),
            None => format!(
                "the peer's {what} is in the legacy unprefixed HMAC-MD5 form ({} bytes), which sockserv refuses; the peer needs Python 3.12+ or a {{sha256}} handshake",
                msg.len()
            ),
        }));
    }
    let name = msg.strip_prefix(b"{").and_then(|rest| {
        let end = rest
            .iter()
            .take(MAX_DIGEST_NAME + 1)
            .position(|&b| b == b'}')?;
        Some((&rest[..end], &rest[end + 1..]))
    });
    let Some((name, rest)) = name else {
        return Err(auth_protocol(format!(
            "the peer's {what} has no {{digest}} prefix: {}",
            show(msg)
        )));
    };
    match Digest::from_name(name) {
        Some(digest) => Ok((digest, rest)),
        None if name == b"md5" => Err(auth_protocol(format!(
            "the peer's {what} uses HMAC-MD5, which sockserv refuses ({ACCEPTED} are accepted)"
        ))),
        None => Err(auth_protocol(format!(
            "the peer's {what} names an unsupported digest {{{}}} ({ACCEPTED} are accepted)",
            String::from_utf8_lossy(name)
        ))),
    }
}

/// The digests named in refusals.
const ACCEPTED: &str = "sha256, sha384, sha3_256 and sha3_384";

/// The printable digest name of a message that starts `{name}`, if it does.
fn tag_of(msg: &[u8]) -> Option<String> {
    let rest = msg.strip_prefix(b"{")?;
    let end = rest
        .iter()
        .take(MAX_DIGEST_NAME + 1)
        .position(|&b| b == b'}')?;
    let name = &rest[..end];
    if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(String::from_utf8_lossy(name).into_owned())
}

fn auth_protocol(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::AuthProtocol, detail)
}

/// A short printable rendering of a message for error details.
fn show(msg: &[u8]) -> String {
    const SHOWN: usize = 24;
    let head: String = msg[..msg.len().min(SHOWN)]
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    let more = if msg.len() > SHOWN { "..." } else { "" };
    format!("\"{head}{more}\" ({} bytes)", msg.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mac::hmac_sha256;

    fn keys(list: &[&[u8]]) -> Keys {
        list.iter().map(|k| k.to_vec()).collect::<Vec<_>>().into()
    }

    /// Runs both machines against each other; returns each side's result.
    fn run(server_keys: Keys, client_keys: Keys) -> (Result<()>, Result<()>) {
        let mut server = Handshake::new(Role::Server, server_keys, [1; NONCE_LEN]);
        let mut client = Handshake::new(Role::Client, client_keys, [2; NONCE_LEN]);
        let (mut s_res, mut c_res) = (Ok(()), Ok(()));
        for _ in 0..10 {
            while let Some(m) = server.poll_transmit() {
                if c_res.is_ok() && !client.is_done() {
                    c_res = client.receive(&m);
                }
            }
            while let Some(m) = client.poll_transmit() {
                if s_res.is_ok() && !server.is_done() {
                    s_res = server.receive(&m);
                }
            }
        }
        if s_res.is_ok() && c_res.is_ok() {
            assert!(server.is_done() && client.is_done());
        }
        (s_res, c_res)
    }

    #[test]
    fn matching_keys_complete_both_sides() {
        let (s, c) = run(keys(&[b"secret"]), keys(&[b"secret"]));
        assert_eq!((s, c), (Ok(()), Ok(())));
    }

    #[test]
    fn any_server_key_matches_for_rotation() {
        let (s, c) = run(keys(&[b"old", b"new"]), keys(&[b"new"]));
        assert_eq!((s, c), (Ok(()), Ok(())));
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let (s, c) = run(keys(&[b"right"]), keys(&[b"wrong"]));
        assert_eq!(s.unwrap_err().kind(), ErrorKind::AuthFailed);
        assert_eq!(c.unwrap_err().kind(), ErrorKind::AuthFailed);
    }

    #[test]
    fn server_challenge_bytes_are_exact() {
        let mut server = Handshake::new(Role::Server, keys(&[b"k"]), [7; NONCE_LEN]);
        let msg = server.poll_transmit().unwrap();
        let mut expected = b"#CHALLENGE#{sha256}".to_vec();
        expected.extend_from_slice(&[7; NONCE_LEN]);
        assert_eq!(msg, expected);
        assert_eq!(server.poll_transmit(), None);
    }

    #[test]
    fn client_response_is_the_tagged_mac_of_the_whole_body() {
        let mut client = Handshake::new(Role::Client, keys(&[b"k"]), [0; NONCE_LEN]);
        let body = [b"{sha256}".as_slice(), &[9; NONCE_LEN]].concat();
        client.receive(&[CHALLENGE, &body].concat()).unwrap();
        let response = client.poll_transmit().unwrap();
        assert_eq!(
            response,
            [b"{sha256}".as_slice(), &hmac_sha256(b"k", &body)].concat()
        );
    }

    fn server_after_challenge() -> Handshake {
        let mut server = Handshake::new(Role::Server, keys(&[b"k"]), [3; NONCE_LEN]);
        server.poll_transmit();
        server
    }

    #[test]
    fn legacy_and_md5_responses_are_refused_with_failure() {
        for response in [
            vec![0u8; 16],
            vec![0u8; 20],
            [b"{md5}".as_slice(), &[0; 16]].concat(),
        ] {
            let mut server = server_after_challenge();
            let err = server.receive(&response).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AuthProtocol, "{err}");
            assert_eq!(server.poll_transmit().unwrap(), FAILURE);
        }
    }

    #[test]
    fn challenge_problems_are_named() {
        let cases: [(&[u8], &str); 4] = [
            (b"#WELCOME#", "expected a"),
            (b"#CHALLENGE#{sha256}short", "too short"),
            (b"#CHALLENGE#01234567890123456789", "legacy"),
            (
                b"#CHALLENGE#{md5}0123456789012345678901234567890123456789",
                "MD5",
            ),
        ];
        for (msg, needle) in cases {
            let mut client = Handshake::new(Role::Client, keys(&[b"k"]), [0; NONCE_LEN]);
            let err = client.receive(msg).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AuthProtocol);
            assert!(err.detail().contains(needle), "{err}");
        }
    }

    #[test]
    fn a_tagged_20_byte_challenge_is_not_called_unprefixed() {
        let mut client = Handshake::new(Role::Client, keys(&[b"k"]), [0; NONCE_LEN]);
        let msg = [CHALLENGE, b"{sha256}", &[1; 12]].concat();
        let err = client.receive(&msg).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AuthProtocol);
        assert!(!err.detail().contains("unprefixed"), "{err}");
        assert!(
            err.detail()
                .contains("20 bytes long with a {sha256} prefix"),
            "{err}"
        );
    }

    #[test]
    fn sha3_challenges_are_answered_and_sha3_responses_verified() {
        for (tag, digest) in [
            (b"{sha3_256}".as_slice(), Digest::Sha3_256),
            (b"{sha3_384}".as_slice(), Digest::Sha3_384),
        ] {
            let mut client = Handshake::new(Role::Client, keys(&[b"k"]), [0; NONCE_LEN]);
            let body = [tag, &[9; NONCE_LEN]].concat();
            client.receive(&[CHALLENGE, &body].concat()).unwrap();
            let response = client.poll_transmit().unwrap();
            assert_eq!(response, [tag, &digest.mac(b"k", &body)].concat());

            let mut server = Handshake::new(Role::Server, keys(&[b"k"]), [3; NONCE_LEN]);
            let challenge = server.poll_transmit().unwrap();
            let ours = &challenge[CHALLENGE.len()..];
            server
                .receive(&[tag, &digest.mac(b"k", ours)].concat())
                .unwrap();
            assert_eq!(server.poll_transmit().unwrap(), WELCOME);
        }
    }

    #[test]
    fn reflected_challenge_is_refused() {
        let mut client = Handshake::new(Role::Client, keys(&[b"k"]), [5; NONCE_LEN]);
        let mut server = server_after_challenge();
        // Bring the client to the point where it has sent its own challenge.
        let body = [b"{sha256}".as_slice(), &[3; NONCE_LEN]].concat();
        client.receive(&[CHALLENGE, &body].concat()).unwrap();
        server.receive(&client.poll_transmit().unwrap()).unwrap();
        client.receive(&server.poll_transmit().unwrap()).unwrap();
        let own = client.poll_transmit().unwrap();
        let err = client.receive(&own).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AuthProtocol);
    }

    #[test]
    fn nothing_is_accepted_after_failure() {
        let mut server = server_after_challenge();
        assert!(server.receive(b"garbage").is_err());
        assert_eq!(
            server.receive(WELCOME).unwrap_err().kind(),
            ErrorKind::InvalidState
        );
    }
}
