//! The handshake state machine (`auth::Handshake`), both roles.
//!
//! Mode 0, a stranger: one machine, with a key the input cannot know (a
//! constant never in the input), fed arbitrary frames. It must never end
//! `is_done()`: that would let in a peer that does not know the key.
//!
//! Mode 1, a man in the middle: an honest server and client, whose keys and
//! nonces the input picks, talk through a script of the input's choosing
//! that forwards, drops, corrupts, replaces, injects, reflects (a machine's
//! own message sent back to it) and replays messages. Checked:
//! - the server is done only if a frame it received was a valid response to
//!   its challenge under one of its keys (checked by a reference HMAC), and
//!   the client likewise for its challenge and its key;
//! - with no frame made up by the script (only forwarded, dropped, reflected
//!   or replayed), either side is done only if the keys match;
//! - with pure forwarding, both sides are done exactly when the client's key
//!   is one of the server's, and both fail otherwise;
//! - no machine ever emits a frame over 256 bytes (the handshake's limit);
//! - nothing panics.
#![no_main]

use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::{Sha256, Sha384};
use sockserv::proto::handshake::{
    Handshake, Keys, Role, CHALLENGE, MAX_HANDSHAKE_FRAME, NONCE_LEN,
};

#[path = "hmac_key.rs"]
mod hmac_key;
#[path = "input.rs"]
mod input;
use hmac_key::same_hmac_key;
use input::Input;

/// A key no input contains: the stranger of mode 0 cannot answer for it.
const SECRET: &[u8] = b"\x9c\x1e\x7f sockserv fuzz secret, not in any input \x03\xd4";

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// A length-prefixed byte string of at most `max` bytes.
    fn blob(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.byte()) % (max + 1);
        self.bytes(n)
    }
    fn nonce(&mut self) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        let b = self.bytes(NONCE_LEN);
        n[..b.len()].copy_from_slice(b);
        n
    }
}

fn drain(hs: &mut Handshake, out: &mut Vec<Vec<u8>>) {
    while let Some(m) = hs.poll_transmit() {
        assert!(
            m.len() as u64 <= MAX_HANDSHAKE_FRAME,
            "a handshake frame of {} bytes",
            m.len()
        );
        out.push(m);
    }
}

/// Whether `response` answers `challenge_msg` (a whole #CHALLENGE# frame)
/// under `key`, by the protocol: "{sha256}" + HMAC-SHA256(key, body), or
/// the same with sha384.
fn valid_response(key: &[u8], challenge_msg: &[u8], response: &[u8]) -> bool {
    let Some(body) = challenge_msg.strip_prefix(CHALLENGE) else {
        return false;
    };
    if let Some(tag) = response.strip_prefix(b"{sha256}") {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(body);
        return m.verify_slice(tag).is_ok();
    }
    if let Some(tag) = response.strip_prefix(b"{sha384}") {
        let mut m = Hmac::<Sha384>::new_from_slice(key).unwrap();
        m.update(body);
        return m.verify_slice(tag).is_ok();
    }
    false
}

fn stranger(mut input: Input) {
    let role = if input.byte() & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let keys: Keys = vec![SECRET.to_vec()].into();
    let mut hs = Handshake::new(role, keys, input.nonce());
    let mut sent = Vec::new();
    drain(&mut hs, &mut sent);
    while !input.is_empty() {
        // Up to 300 bytes: past the 256 the drivers enforce.
        let msg = input.blob(300).to_vec();
        let _ = hs.receive(&msg);
        drain(&mut hs, &mut sent);
        assert!(!hs.is_done(), "a stranger without the key got through");
    }
}

/// Which side a message travels to.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Server,
    Client,
}

fn man_in_the_middle(mut input: Input) {
    let n_server_keys = usize::from(input.byte() % 3) + 1;
    let server_keys: Vec<Vec<u8>> = (0..n_server_keys)
        .map(|_| {
            let k = input.blob(8).to_vec();
            if k.is_empty() {
                b"k".to_vec()
            } else {
                k
            }
        })
        .collect();
    let client_key = {
        let k = input.blob(8).to_vec();
        if k.is_empty() {
            b"k".to_vec()
        } else {
            k
        }
    };
    let keys_match = server_keys.iter().any(|k| same_hmac_key(k, &client_key));
    let server_keys: Keys = server_keys.into();
    let client_keys: Keys = vec![client_key.clone()].into();
    let server_nonce = input.nonce();
    let mut client_nonce = input.nonce();
    if client_nonce == server_nonce {
        // Nonces come from the OS random source and never meet; equal ones
        // would make the server refuse the client's challenge as its own.
        client_nonce[0] ^= 1;
    }
    let mut server = Handshake::new(Role::Server, server_keys.clone(), server_nonce);
    let mut client = Handshake::new(Role::Client, client_keys, client_nonce);

    // Messages in flight to each side, and every message ever seen (for
    // replays), and what each side received.
    let mut to_client: Vec<Vec<u8>> = Vec::new();
    let mut to_server: Vec<Vec<u8>> = Vec::new();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut server_sent: Vec<Vec<u8>> = Vec::new();
    let mut client_sent: Vec<Vec<u8>> = Vec::new();
    let mut server_got: Vec<Vec<u8>> = Vec::new();
    let mut client_got: Vec<Vec<u8>> = Vec::new();
    let mut made_up = false;
    let mut only_forwarded = true;

    let mut out = Vec::new();
    drain(&mut server, &mut out);
    server_sent.extend(out.iter().cloned());
    seen.extend(out.iter().cloned());
    to_client.append(&mut out);

    for _ in 0..64 {
        if to_client.is_empty() && to_server.is_empty() && input.is_empty() {
            break;
        }
        // Once the script has run out, every message is forwarded.
        let (op, side) = if input.is_empty() {
            let side = if to_client.is_empty() {
                Side::Server
            } else {
                Side::Client
            };
            (0, side)
        } else {
            let op = input.byte();
            let side = if op & 0x80 == 0 {
                Side::Client
            } else {
                Side::Server
            };
            (op, side)
        };
        let queue = match side {
            Side::Client => &mut to_client,
            Side::Server => &mut to_server,
        };
        // Pick the message to deliver, if any.
        let msg: Option<Vec<u8>> = match op & 0x7f {
            // Forward the next message in order (also when the script ran out).
            0..=63 => (!queue.is_empty()).then(|| queue.remove(0)),
            // Drop it.
            64..=71 => {
                only_forwarded = false;
                if !queue.is_empty() {
                    queue.remove(0);
                }
                None
            }
            // Flip one bit of it.
            72..=87 => {
                only_forwarded = false;
                made_up = true;
                (!queue.is_empty()).then(|| {
                    let mut m = queue.remove(0);
                    if !m.is_empty() {
                        let at = usize::from(input.byte()) % m.len();
                        m[at] ^= 1 << (input.byte() % 8);
                    }
                    m
                })
            }
            // Inject bytes of the input's choosing.
            88..=103 => {
                only_forwarded = false;
                made_up = true;
                Some(input.blob(255).to_vec())
            }
            // Replay any message seen so far (to either side), reflection
            // included: a machine's own message sent back to it.
            _ => {
                only_forwarded = false;
                (!seen.is_empty()).then(|| seen[usize::from(input.byte()) % seen.len()].clone())
            }
        };
        let Some(msg) = msg else { continue };
        let mut out = Vec::new();
        match side {
            Side::Client => {
                if !client.is_done() {
                    let _ = client.receive(&msg);
                }
                client_got.push(msg);
                drain(&mut client, &mut out);
                client_sent.extend(out.iter().cloned());
                seen.extend(out.iter().cloned());
                to_server.append(&mut out);
            }
            Side::Server => {
                if !server.is_done() {
                    let _ = server.receive(&msg);
                }
                server_got.push(msg);
                drain(&mut server, &mut out);
                server_sent.extend(out.iter().cloned());
                seen.extend(out.iter().cloned());
                to_client.append(&mut out);
            }
        }
    }

    if server.is_done() {
        // It accepted a response to its own challenge under one of its keys.
        let challenge = &server_sent[0];
        assert!(
            server_got
                .iter()
                .any(|r| server_keys.iter().any(|k| valid_response(k, challenge, r))),
            "the server finished without a valid response"
        );
        assert!(
            keys_match || made_up,
            "the server let in a client with another key"
        );
    }
    if client.is_done() {
        let challenge = client_sent
            .iter()
            .find(|m| m.starts_with(CHALLENGE))
            .expect("a done client has sent its challenge");
        assert!(
            client_got
                .iter()
                .any(|r| valid_response(&client_key, challenge, r)),
            "the client finished without a valid response"
        );
        assert!(
            keys_match || made_up,
            "the client accepted a server with another key"
        );
    }
    if only_forwarded && to_client.is_empty() && to_server.is_empty() {
        assert_eq!(server.is_done(), keys_match, "honest server outcome");
        assert_eq!(client.is_done(), keys_match, "honest client outcome");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    match input.byte() % 2 {
        0 => stranger(input),
        _ => man_in_the_middle(input),
    }
});
