//! Sealed datagrams from senders whose clocks are skewed, both ways (issue
//! 10, finding 6): a sender whose clock runs fast, flooding, must not lock
//! out a sender in step; datagrams dated ahead never move the replay floor.
//!
//! The replay memory first as the sans-IO `Opener` with an injected clock
//! (the issue's own numbers: default capacity and window, 66,536 datagrams
//! 25 s ahead in 4.4 s), then over real UDP sockets on 127.0.0.1.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sockserv::proto::sealed::{seal, Opener, Rejection};
use sockserv::Keys;
use sockserv::{Config, DgramSocket};

const KEY: &[u8] = b"datagram key for the skew tests";
const WINDOW_MS: u64 = 30_000;
const CAPACITY: usize = 65_536;
const T0: u64 = 1_800_000_000_000;

fn keys() -> Keys {
    Arc::from(vec![KEY.to_vec()])
}

/// Distinct nonces: a sender tag and a counter.
fn nonce(sender: u8, n: u64) -> [u8; 16] {
    let mut out = [sender; 16];
    out[8..].copy_from_slice(&n.to_be_bytes());
    out
}

/// What happened to the honest sender.
#[derive(Debug, Default)]
struct Outcome {
    honest_sent: u64,
    honest_accepted: u64,
    flood_sent: u64,
    flood_accepted: u64,
    /// A datagram dated at the oldest edge of the window, sent at the end:
    /// accepted only when nothing raised the floor.
    edge_accepted: bool,
    first_refusal: Option<Rejection>,
}

/// The run with the receiver's clock injected: with a replay memory
/// of `capacity`, a flooder `flood_ms` off sends `capacity` + 1,000
/// datagrams in 4.4 s (66,536 with the default capacity, as in the issue),
/// then keeps flooding at 2 per ms while the honest sender, `honest_ms`
/// off, sends 1 per ms for 3 s.
fn run(capacity: usize, flood_ms: i64, honest_ms: i64) -> Outcome {
    let mut o = Opener::new(keys(), WINDOW_MS, capacity);
    let at = |now: u64, skew: i64| now.checked_add_signed(skew).unwrap();
    let mut out = Outcome::default();
    let flood = |o: &mut Opener, now: u64, out: &mut Outcome| {
        let d = seal(KEY, at(now, flood_ms), nonce(1, out.flood_sent), b"flood");
        out.flood_sent += 1;
        if o.open(&d, now).is_ok() {
            out.flood_accepted += 1;
        }
    };
    let burst = capacity as u64 + 1_000;
    for i in 0..burst {
        flood(&mut o, T0 + i * 4_400 / burst, &mut out);
    }
    let start = T0 + 4_400;
    for ms in 0..3_000u64 {
        let now = start + ms;
        flood(&mut o, now, &mut out);
        flood(&mut o, now, &mut out);
        let d = seal(KEY, at(now, honest_ms), nonce(2, ms), b"honest");
        out.honest_sent += 1;
        match o.open(&d, now) {
            Ok(_) => out.honest_accepted += 1,
            Err(e) => {
                out.first_refusal.get_or_insert(e);
            }
        }
    }
    let now = start + 3_000;
    let edge = seal(KEY, now - WINDOW_MS, nonce(3, 0), b"edge");
    out.edge_accepted = o.open(&edge, now).is_ok();
    out
}

#[test]
fn a_fast_flooder_does_not_lock_out_senders_in_step() {
    // The numbers with an honest sender in step, then smaller runs
    // with one 2 s slow and one 0.5 s fast (within 1/16 of the window
    // ahead: still in step).
    for (capacity, honest) in [(CAPACITY, 0), (CAPACITY / 8, -2_000), (CAPACITY / 8, 500)] {
        let out = run(capacity, 25_000, honest);
        eprintln!("capacity {capacity}, flooder +25 s, honest {honest:+} ms: {out:?}");
        assert_eq!(
            out.honest_accepted, out.honest_sent,
            "honest {honest:+} ms: {out:?}"
        );
        // The datagrams dated ahead never moved the floor.
        assert!(out.edge_accepted, "honest {honest:+} ms: {out:?}");
        // The flooder gets its share of the memory, and no more.
        assert!(
            out.flood_accepted <= (capacity / 8) as u64,
            "honest {honest:+} ms: {out:?}"
        );
    }
}

#[test]
fn a_slow_flooder_does_not_lock_out_senders_in_step() {
    for honest in [0, -2_000, 500] {
        let out = run(CAPACITY / 8, -25_000, honest);
        eprintln!("flooder -25 s, honest {honest:+} ms: {out:?}");
        assert_eq!(
            out.honest_accepted, out.honest_sent,
            "honest {honest:+} ms: {out:?}"
        );
    }
}

/// Whatever the mix of skews ahead (pseudo-random, 1/16 of the window to
/// all of it, at any rate), the floor stays where the window puts it and
/// every sender in step gets in.
#[test]
fn datagrams_dated_ahead_never_move_the_floor() {
    let mut o = Opener::new(keys(), WINDOW_MS, 4_096);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut honest = 0;
    for ms in 0..20_000u64 {
        let now = T0 + ms;
        for k in 0..(next() % 6) {
            let skew = WINDOW_MS / 16 + 1 + next() % (WINDOW_MS - WINDOW_MS / 16);
            let d = seal(KEY, now + skew, nonce(1, ms * 8 + k), b"ahead");
            match o.open(&d, now) {
                Ok(_) | Err(Rejection::AheadFull { .. }) => {}
                Err(e) => panic!("a datagram {skew} ms ahead: {e}"),
            }
        }
        if ms % 10 == 0 {
            let d = seal(KEY, now, nonce(2, ms), b"honest");
            o.open(&d, now)
                .unwrap_or_else(|e| panic!("at {ms} ms: {e}"));
            honest += 1;
            // The oldest edge of the window is still open.
            let edge = seal(KEY, now - WINDOW_MS, nonce(3, ms), b"edge");
            o.open(&edge, now)
                .unwrap_or_else(|e| panic!("edge at {ms} ms: {e}"));
        }
    }
    assert_eq!(honest, 2_000);
    assert!(o.remembered() <= 4_096, "{}", o.remembered());
}

/// A replay of a datagram dated ahead is refused for as long as it could be
/// fresh, also after the clock passed its date.
#[test]
fn a_datagram_dated_ahead_is_not_replayable() {
    let mut o = Opener::new(keys(), WINDOW_MS, 64);
    let d = seal(KEY, T0 + 20_000, nonce(1, 0), b"ahead");
    o.open(&d, T0).unwrap();
    for now in [T0, T0 + 20_000, T0 + 40_000, T0 + 50_000] {
        assert_eq!(o.open(&d, now), Err(Rejection::Replayed), "at {now}");
    }
    assert!(matches!(
        o.open(&d, T0 + 50_001),
        Err(Rejection::TooOld { .. })
    ));
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The same over real sockets: a flooder 25 s fast, then an honest sender
/// (and one 2 s slow) interleaved with more flood; every honest datagram is
/// delivered. Sent in chunks the receiver drains, so loopback drops none.
#[test]
fn over_udp_a_fast_flooder_does_not_lock_out_an_honest_sender() {
    let mut config = Config::default();
    config.set_key(KEY).unwrap();
    config.datagram_mut().set_replay_capacity(2_000).unwrap();
    let rx = DgramSocket::bind("udp://127.0.0.1:0", &config).unwrap();
    rx.set_timeout(Some(Duration::from_millis(200)));
    let to = rx
        .local_addr()
        .unwrap()
        .trim_start_matches("udp://")
        .to_string();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0u64;
    let mut honest_sent = 0u64;
    let mut honest_got = 0u64;
    let mut send = |payload: &[u8], ts: u64, sender: u8| {
        let d = seal(KEY, ts, nonce(sender, sent), payload);
        sent += 1;
        tx.send_to(&d, &to).unwrap();
        sent
    };
    // Receives until every datagram sent is accounted for (delivered or
    // dropped with a reason); each receive waits at most 200 ms.
    let drain = |sent: u64, honest_got: &mut u64| {
        for _ in 0..sent {
            let s = rx.stats();
            let accounted = s.received + s.too_old + s.too_new + s.replayed + s.bad_tag;
            if accounted >= sent {
                return;
            }
            match rx.recv() {
                Ok((payload, _)) if payload.starts_with(b"honest") => *honest_got += 1,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    };
    // The flood: 4,000 datagrams 25 s ahead, twice the memory, in chunks.
    for _ in 0..40 {
        let mut n = 0;
        for _ in 0..100 {
            n = send(b"flood", now_ms() + 25_000, 1);
        }
        drain(n, &mut honest_got);
    }
    // Then 500 honest datagrams (in step, and 2 s slow) among more flood.
    for _ in 0..10 {
        let mut n = 0;
        for i in 0..50 {
            send(b"flood", now_ms() + 25_000, 1);
            let skew = if i % 2 == 0 { 0 } else { 2_000 };
            n = send(b"honest", now_ms() - skew, 2);
            honest_sent += 1;
        }
        drain(n, &mut honest_got);
    }
    let stats = rx.stats();
    eprintln!("over UDP: {honest_got}/{honest_sent} honest delivered; {stats:?}");
    assert_eq!(honest_got, honest_sent, "{stats:?}");
    assert_eq!(stats.too_old, 0, "{stats:?}");
}
