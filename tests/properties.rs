//! Properties that run in every `cargo test` (proptest): the header codec
//! round-trips for every size class, the long form included (the header
//! path only: no 2 GiB payload is allocated); any chunking of a valid
//! stream decodes to the same frames; the handshake succeeds iff the keys
//! are the same, on the state machines and over real sockets.

mod common;

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use proptest::prelude::*;
use sha2::Digest as _;
use sockserv::proto::frame::{decode_header, encode_header, MAX_SHORT_PAYLOAD};
use sockserv::proto::handshake::{Handshake, Keys, Role, NONCE_LEN};
use sockserv::proto::recv_buffer::{Decoded, RecvBuffer};
use sockserv::{Config, Connection, ErrorKind};

/// Payload lengths from every size class: tiny, one byte either side of
/// the short form's limit, long form, the extremes.
fn any_length() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..=255,
        256u64..=65_536,
        65_537u64..MAX_SHORT_PAYLOAD,
        Just(MAX_SHORT_PAYLOAD),
        Just(MAX_SHORT_PAYLOAD + 1),
        (MAX_SHORT_PAYLOAD + 1)..=u64::MAX,
        Just(u64::MAX),
    ]
}

proptest! {
    #[test]
    fn header_round_trips_for_every_size_class(n in any_length()) {
        let h = encode_header(n);
        let bytes = h.as_bytes();
        let short = n <= MAX_SHORT_PAYLOAD;
        prop_assert_eq!(bytes.len(), if short { 4 } else { 12 });
        if !short {
            prop_assert_eq!(&bytes[..4], &[0xff; 4]);
        }
        let d = decode_header(bytes, u64::MAX).unwrap().unwrap();
        prop_assert_eq!((d.header_len, d.payload_len), (bytes.len(), n));
        // The limit is checked on the header alone: at n it passes, one
        // below it is refused before anything else.
        prop_assert!(decode_header(bytes, n).unwrap().is_some());
        if n > 0 {
            let e = decode_header(bytes, n - 1).unwrap_err();
            prop_assert_eq!(e.kind(), ErrorKind::FrameTooLarge);
        }
        // Any prefix of a header asks for more.
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode_header(&bytes[..cut], u64::MAX).unwrap(), None);
        }
    }

    /// The long form is accepted for any length, small ones included, and
    /// means the same as the short form.
    #[test]
    fn long_form_means_the_same_for_small_lengths(n in 0u64..=MAX_SHORT_PAYLOAD) {
        let mut long = vec![0xff; 4];
        long.extend_from_slice(&n.to_be_bytes());
        let d = decode_header(&long, u64::MAX).unwrap().unwrap();
        prop_assert_eq!((d.header_len, d.payload_len), (12, n));
    }

    /// Any negative length but -1 is a protocol error.
    #[test]
    fn other_negative_lengths_are_refused(v in i32::MIN..-1) {
        let e = decode_header(&v.to_be_bytes(), u64::MAX).unwrap_err();
        prop_assert_eq!(e.kind(), ErrorKind::Protocol);
    }

    #[test]
    fn any_chunking_of_a_valid_stream_gives_the_same_frames(
        frames in prop::collection::vec(
            prop_oneof![
                8 => prop::collection::vec(any::<u8>(), 0..300),
                1 => prop::collection::vec(any::<u8>(), 60_000..70_000),
            ],
            0..20,
        ),
        long_form in prop::collection::vec(any::<bool>(), 20),
        chunks in prop::collection::vec(1usize..5000, 1..50),
        initial in prop_oneof![Just(0usize), Just(7), Just(65_536)],
    ) {
        let mut stream = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            if long_form[i] {
                // A sender may use the long form for any length.
                stream.extend_from_slice(&[0xff; 4]);
                stream.extend_from_slice(&(f.len() as u64).to_be_bytes());
            } else {
                stream.extend_from_slice(encode_header(f.len() as u64).as_bytes());
            }
            stream.extend_from_slice(f);
        }
        let mut buf = RecvBuffer::with_capacity(initial);
        let mut got = Vec::new();
        let mut fed = 0;
        let mut turn = 0;
        loop {
            while let Decoded::Frame(r) = buf.next_frame(1 << 20).unwrap() {
                got.push(buf.bytes(r).to_vec());
            }
            if fed == stream.len() {
                break;
            }
            let n = chunks[turn % chunks.len()].min(stream.len() - fed);
            turn += 1;
            buf.extend(&stream[fed..fed + n]);
            fed += n;
        }
        prop_assert!(buf.pending().is_empty());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn handshake_succeeds_iff_the_keys_match(
        server_keys in prop::collection::vec(prop::collection::vec(1u8..=255, 1..80), 1..4),
        client_key in prop::collection::vec(1u8..=255, 1..80),
        pick in prop::option::of(0usize..3),
        server_nonce in any::<[u8; NONCE_LEN]>(),
        client_nonce in any::<[u8; NONCE_LEN]>(),
    ) {
        prop_assume!(server_nonce != client_nonce);
        // Half the time the client holds one of the server's keys.
        let client_key = match pick {
            Some(i) => server_keys[i % server_keys.len()].clone(),
            None => client_key,
        };
        let matching = server_keys.iter().any(|k| same_hmac_key(k, &client_key));
        let (s, c) = run_machines(server_keys.into(), vec![client_key].into(), server_nonce, client_nonce);
        prop_assert_eq!(s.is_ok(), matching, "server: {:?}", s);
        prop_assert_eq!(c.is_ok(), matching, "client: {:?}", c);
        if !matching {
            prop_assert_eq!(s.unwrap_err(), ErrorKind::AuthFailed);
            prop_assert_eq!(c.unwrap_err(), ErrorKind::AuthFailed);
        }
    }
}

proptest! {
    // Real sockets and threads: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn handshake_over_a_socketpair_succeeds_iff_the_keys_match(
        server_key in prop::collection::vec(1u8..=255, 1..100),
        client_key in prop::collection::vec(1u8..=255, 1..100),
        same in any::<bool>(),
    ) {
        let client_key = if same { server_key.clone() } else { client_key };
        let matching = same_hmac_key(&server_key, &client_key);
        let (a, b) = UnixStream::pair().unwrap();
        let server_config = common::config_with_key(&server_key);
        let server = std::thread::spawn(move || {
            Connection::establish(a.into(), &server_config, Role::Server).map(|_| ()).map_err(|(e, _)| e.kind())
        });
        let client = Connection::establish(b.into(), &common::config_with_key(&client_key), Role::Client)
            .map(|_| ())
            .map_err(|(e, _)| e.kind());
        let server = server.join().unwrap();
        prop_assert_eq!(server.is_ok(), matching, "{:?}", server);
        prop_assert_eq!(client.is_ok(), matching, "{:?}", client);
    }
}

/// Whether two keys are one HMAC-SHA256 key: HMAC zero-pads a key to its
/// 64-byte block (and hashes a longer one first). The strategies above
/// draw keys without zero bytes, so this is plain equality for keys of up
/// to 64 bytes; a longer key equals its own SHA-256 digest, which random
/// keys never hit.
fn same_hmac_key(a: &[u8], b: &[u8]) -> bool {
    let norm = |k: &[u8]| {
        let mut k = if k.len() > 64 {
            sha2::Sha256::digest(k).to_vec()
        } else {
            k.to_vec()
        };
        while k.last() == Some(&0) {
            k.pop();
        }
        k
    };
    norm(a) == norm(b)
}

/// Runs a server and a client machine against each other.
fn run_machines(
    server_keys: Keys,
    client_keys: Keys,
    server_nonce: [u8; NONCE_LEN],
    client_nonce: [u8; NONCE_LEN],
) -> (Result<(), ErrorKind>, Result<(), ErrorKind>) {
    let mut server = Handshake::new(Role::Server, server_keys, server_nonce);
    let mut client = Handshake::new(Role::Client, client_keys, client_nonce);
    let (mut s, mut c) = (Ok(()), Ok(()));
    // Bounded: the handshake is 6 messages.
    for _ in 0..8 {
        let mut moved = false;
        while let Some(m) = server.poll_transmit() {
            moved = true;
            if c.is_ok() && !client.is_done() {
                c = client.receive(&m).map_err(|e| e.kind());
            }
        }
        while let Some(m) = client.poll_transmit() {
            moved = true;
            if s.is_ok() && !server.is_done() {
                s = server.receive(&m).map_err(|e| e.kind());
            }
        }
        if !moved {
            break;
        }
    }
    if s.is_ok() && !server.is_done() {
        s = Err(ErrorKind::InvalidState);
    }
    if c.is_ok() && !client.is_done() {
        c = Err(ErrorKind::InvalidState);
    }
    (s, c)
}

#[test]
fn one_byte_and_one_mebibyte_keys_work_and_differ_from_their_neighbours() {
    let cases: [(Vec<u8>, Vec<u8>); 3] = [
        (vec![7], vec![8]),
        (vec![0x5a; 1 << 20], {
            let mut k = vec![0x5a; 1 << 20];
            k[(1 << 20) - 1] ^= 1;
            k
        }),
        // The empty key cannot even be set.
        (b"k".to_vec(), b"k\x01".to_vec()),
    ];
    for (key, other) in cases {
        let keys = |k: &Vec<u8>| -> Keys { Arc::from(vec![k.clone()]) };
        let ok = run_machines(keys(&key), keys(&key), [1; NONCE_LEN], [2; NONCE_LEN]);
        assert_eq!(ok, (Ok(()), Ok(())), "key of {} bytes", key.len());
        let bad = run_machines(keys(&key), keys(&other), [1; NONCE_LEN], [2; NONCE_LEN]);
        assert_eq!(
            bad,
            (Err(ErrorKind::AuthFailed), Err(ErrorKind::AuthFailed))
        );
    }
    assert_eq!(
        Config::default().set_key(b"").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}
