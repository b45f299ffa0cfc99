//! Authenticated datagrams, sans-IO: sealing (header + HMAC-SHA256 tag) and
//! opening (tag, time window, replay check). No sockets, no clock, no
//! randomness of its own: the caller passes the time and the nonce, so tests
//! inject both. The byte layout is specified in docs/DATAGRAM.md:
//!
//! ```text
//! offset  size  field
//! 0       1     version, 0x01
//! 1       8     timestamp: milliseconds since the Unix epoch, big-endian u64
//! 9       16    nonce: random bytes from the OS random source
//! 25      n     payload
//! 25+n    32    tag: HMAC-SHA256(key, bytes 0 .. 25+n)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::proto::handshake::Keys;
use crate::proto::mac::verify_hmac_sha256;

/// The only format version this code speaks.
pub(crate) const VERSION: u8 = 1;
pub(crate) const NONCE_LEN: usize = 16;
pub(crate) const HEADER_LEN: usize = 1 + 8 + NONCE_LEN;
pub(crate) const TAG_LEN: usize = 32;
/// Bytes a sealed datagram carries beyond its payload.
pub(crate) const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// The header of a datagram sent at `timestamp_ms` with `nonce`.
pub fn seal_header(timestamp_ms: u64, nonce: [u8; NONCE_LEN]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0] = VERSION;
    header[1..9].copy_from_slice(&timestamp_ms.to_be_bytes());
    header[9..].copy_from_slice(&nonce);
    header
}

/// The tag of a datagram: HMAC-SHA256 over the header then the payload,
/// computed in place so the sender never copies the payload.
pub fn seal_tag(key: &[u8], header: &[u8; HEADER_LEN], payload: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(header);
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

/// A whole sealed datagram (header, payload, tag) in one buffer; the socket
/// driver sends the three parts with one sendmsg instead.
pub fn seal(key: &[u8], timestamp_ms: u64, nonce: [u8; NONCE_LEN], payload: &[u8]) -> Vec<u8> {
    let header = seal_header(timestamp_ms, nonce);
    let tag = seal_tag(key, &header, payload);
    [&header[..], payload, &tag[..]].concat()
}

/// Why a received datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Shorter than a header and a tag: `len` bytes.
    TooShort {
        /// The datagram's size.
        len: usize,
    },
    /// A version byte this code does not speak.
    BadVersion(u8),
    /// The tag matches none of the keys (forged, damaged, or another key).
    BadTag,
    /// Sent before the oldest time still accepted: outside the window, or
    /// older than what the full replay memory had to forget.
    TooOld {
        /// The datagram's timestamp.
        timestamp_ms: u64,
        /// The oldest timestamp accepted.
        oldest_ms: u64,
    },
    /// Sent after the newest time accepted (the sender's clock runs ahead by
    /// more than the window).
    TooNew {
        /// The datagram's timestamp.
        timestamp_ms: u64,
        /// The newest timestamp accepted.
        newest_ms: u64,
    },
    /// This exact datagram (timestamp and nonce) was accepted before.
    Replayed,
    /// Dated `ahead_ms` after the receiver's clock (more than 1/16 of the
    /// window, less than all of it) while the replay memory's share for
    /// datagrams that far ahead is full: senders whose clocks run fast use
    /// only that share, so they never crowd out the senders in step
    /// (counted as too new).
    AheadFull {
        /// The datagram's timestamp.
        timestamp_ms: u64,
        /// How far after the receiver's clock it is dated.
        ahead_ms: u64,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Rejection::TooShort { len } => write!(
                f,
                "the datagram is {len} bytes, shorter than the {OVERHEAD} bytes of header and tag"
            ),
            Rejection::BadVersion(v) => {
                write!(
                    f,
                    "unknown datagram version {v} (this side speaks {VERSION})"
                )
            }
            Rejection::BadTag => write!(f, "the tag matches none of the keys"),
            Rejection::TooOld {
                timestamp_ms,
                oldest_ms,
            } => write!(
                f,
                "sent at {timestamp_ms} ms, before the oldest accepted time {oldest_ms} ms"
            ),
            Rejection::TooNew {
                timestamp_ms,
                newest_ms,
            } => write!(
                f,
                "sent at {timestamp_ms} ms, after the newest accepted time {newest_ms} ms"
            ),
            Rejection::Replayed => write!(f, "the datagram was received before (a replay)"),
            Rejection::AheadFull {
                timestamp_ms,
                ahead_ms,
            } => write!(
                f,
                "sent at {timestamp_ms} ms, {ahead_ms} ms ahead of this clock, and the replay memory's share for datagrams that far ahead is full (the sender's clock runs fast, or floods)"
            ),
        }
    }
}

/// The receiving side: checks each datagram and remembers the ones it
/// accepted for as long as they could be replayed.
pub struct Opener {
    keys: Keys,
    window_ms: u64,
    replay: ReplayMemory,
}

impl Opener {
    /// `keys` must not be empty: a datagram is accepted under any of them
    /// (rotation). A datagram is fresh when its timestamp is within
    /// `window_ms` of the receiver's clock, either way; at most `capacity`
    /// accepted datagrams are remembered.
    pub fn new(keys: Keys, window_ms: u64, capacity: usize) -> Opener {
        assert!(!keys.is_empty(), "opening datagrams needs a key");
        Opener {
            keys,
            window_ms,
            replay: ReplayMemory::new(capacity, window_ms),
        }
    }

    /// Checks `datagram` received at `now_ms` and returns its payload.
    /// Order: length, version, tag, time, replay: the tag comes before the
    /// time so that only authenticated datagrams reach the clock checks and
    /// the replay memory, and each counter counts what it says.
    pub fn open<'a>(&mut self, datagram: &'a [u8], now_ms: u64) -> Result<&'a [u8], Rejection> {
        if datagram.len() < OVERHEAD {
            return Err(Rejection::TooShort {
                len: datagram.len(),
            });
        }
        if datagram[0] != VERSION {
            return Err(Rejection::BadVersion(datagram[0]));
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        if !self
            .keys
            .iter()
            .any(|key| verify_hmac_sha256(key, signed, tag))
        {
            return Err(Rejection::BadTag);
        }
        let timestamp_ms = u64::from_be_bytes(datagram[1..9].try_into().expect("8 bytes"));
        let nonce: [u8; NONCE_LEN] = datagram[9..HEADER_LEN].try_into().expect("16 bytes");

        let newest_ms = now_ms.saturating_add(self.window_ms);
        if timestamp_ms > newest_ms {
            return Err(Rejection::TooNew {
                timestamp_ms,
                newest_ms,
            });
        }
        let oldest_ms = self.replay.oldest(now_ms.saturating_sub(self.window_ms));
        if timestamp_ms < oldest_ms {
            return Err(Rejection::TooOld {
                timestamp_ms,
                oldest_ms,
            });
        }
        self.replay.forget_before(oldest_ms);
        self.replay.remember(timestamp_ms, nonce, now_ms)?;
        Ok(&signed[HEADER_LEN..])
    }

    /// Datagrams remembered now (for tests and memory accounting).
    pub fn remembered(&self) -> usize {
        self.replay.seen.len() + self.replay.ahead.len()
    }
}

/// How far ahead of the receiver's clock a datagram may be dated and still
/// count as in step, as a fraction of the window (1/16: about 1.9 s of the
/// default 30 s): clocks in step to NTP's accuracy land here.
const IN_STEP_DIVISOR: u64 = 16;
/// Datagrams dated further ahead are remembered apart, in two bands (up to
/// a quarter of the window ahead, and up to the whole window), each holding
/// at most 1/`AHEAD_SHARE_DIVISOR` of the capacity until they expire.
const AHEAD_SHARE_DIVISOR: usize = 8;

/// The accepted datagrams still inside the window, keyed by (timestamp,
/// nonce): a replay carries both unchanged (the tag covers them), and
/// ordering by timestamp makes forgetting the expired ones cheap.
///
/// Two parts. `seen` holds the datagrams that were in step when they came
/// (dated before the clock, or at most 1/16 of the window after it) and is
/// the only part ever evicted from, so only in-step traffic can raise the
/// floor. `ahead` holds those dated further ahead (a sender whose clock
/// runs fast), in two bands of a bounded share each; a full band refuses
/// (`AheadFull`) instead of evicting, and its entries stay counted until
/// they expire. Before, one memory held both, and once it held only
/// future-dated entries, evicting one moved the floor into the future:
/// a sender 25 s fast locked every sender in step out for 20 s (issue 10).
struct ReplayMemory {
    seen: BTreeSet<(u64, [u8; NONCE_LEN])>,
    /// Each with the band it was counted in.
    ahead: BTreeMap<(u64, [u8; NONCE_LEN]), usize>,
    ahead_count: [usize; 2],
    capacity: usize,
    window_ms: u64,
    /// When `seen` is full, its oldest entry is forgotten and nothing at or
    /// before that timestamp is accepted any more: a forgotten datagram can
    /// then never be replayed. Memory stays bounded; only old-ish datagrams
    /// under a flood of in-step ones are refused, never a replay accepted.
    floor: Option<u64>,
}

impl ReplayMemory {
    fn new(capacity: usize, window_ms: u64) -> ReplayMemory {
        ReplayMemory {
            seen: BTreeSet::new(),
            ahead: BTreeMap::new(),
            ahead_count: [0; 2],
            capacity: capacity.max(1),
            window_ms,
            floor: None,
        }
    }

    /// The oldest timestamp accepted, given the window's.
    fn oldest(&self, window_oldest: u64) -> u64 {
        match self.floor {
            Some(floor) => window_oldest.max(floor.saturating_add(1)),
            None => window_oldest,
        }
    }

    /// The room of each band of `ahead` (none in a memory of under 8).
    fn band_share(&self) -> usize {
        self.capacity / AHEAD_SHARE_DIVISOR
    }

    /// The room of `seen`: the rest, at least 1.
    fn seen_capacity(&self) -> usize {
        (self.capacity - 2 * self.band_share()).max(1)
    }

    /// Drops entries older than `oldest`: replays of them are refused as too
    /// old anyway.
    fn forget_before(&mut self, oldest: u64) {
        while self.seen.first().is_some_and(|&(ts, _)| ts < oldest) {
            self.seen.pop_first();
        }
        while let Some(entry) = self.ahead.first_entry() {
            if entry.key().0 >= oldest {
                break;
            }
            let band = entry.remove();
            self.ahead_count[band] -= 1;
        }
    }

    fn remember(
        &mut self,
        timestamp_ms: u64,
        nonce: [u8; NONCE_LEN],
        now_ms: u64,
    ) -> Result<(), Rejection> {
        let key = (timestamp_ms, nonce);
        if self.seen.contains(&key) || self.ahead.contains_key(&key) {
            return Err(Rejection::Replayed);
        }
        let ahead_ms = timestamp_ms.saturating_sub(now_ms);
        if ahead_ms > self.window_ms / IN_STEP_DIVISOR {
            let band = usize::from(ahead_ms > self.window_ms / 4);
            if self.ahead_count[band] >= self.band_share() {
                return Err(Rejection::AheadFull {
                    timestamp_ms,
                    ahead_ms,
                });
            }
            self.ahead.insert(key, band);
            self.ahead_count[band] += 1;
            return Ok(());
        }
        if self.seen.len() >= self.seen_capacity() {
            let (evicted, _) = self.seen.pop_first().expect("capacity is at least 1");
            self.floor = Some(self.floor.map_or(evicted, |f| f.max(evicted)));
            if timestamp_ms <= evicted {
                // This datagram is as old as the one just forgotten: refuse
                // it under the new floor rather than remember it.
                return Err(Rejection::TooOld {
                    timestamp_ms,
                    oldest_ms: evicted.saturating_add(1),
                });
            }
        }
        self.seen.insert(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const KEY: &[u8] = b"datagram key";
    const NOW: u64 = 1_700_000_000_000;
    const WINDOW: u64 = 30_000;

    fn keys(list: &[&[u8]]) -> Keys {
        Arc::from(list.iter().map(|k| k.to_vec()).collect::<Vec<_>>())
    }

    fn opener() -> Opener {
        Opener::new(keys(&[KEY]), WINDOW, 1000)
    }

    fn nonce(n: u8) -> [u8; NONCE_LEN] {
        [n; NONCE_LEN]
    }

    #[test]
    fn layout_is_byte_exact() {
        let d = seal(KEY, 0x0102_0304_0506_0708, nonce(0xaa), b"hi");
        assert_eq!(d.len(), OVERHEAD + 2);
        assert_eq!(OVERHEAD, 57);
        assert_eq!(d[0], 1);
        assert_eq!(&d[1..9], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&d[9..25], &[0xaa; 16]);
        assert_eq!(&d[25..27], b"hi");
        assert_eq!(&d[27..], &crate::proto::mac::hmac_sha256(KEY, &d[..27]));
    }

    /// A fixed vector, also written in docs/DATAGRAM.md, so another
    /// implementation can check itself against this one.
    #[test]
    fn known_answer() {
        let d = seal(b"key", 1_700_000_000_000, [0x11; NONCE_LEN], b"hello");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "01\
             0000018bcfe56800\
             11111111111111111111111111111111\
             68656c6c6f\
             0654b6c894477aeb215ce256891c4b045790cf2d49b199d78a2917146fc83dee"
        );
    }

    #[test]
    fn opens_what_was_sealed() {
        let mut o = opener();
        for payload in [&b""[..], b"x", &[7u8; 9000]] {
            let d = seal(KEY, NOW, nonce(payload.len() as u8), payload);
            assert_eq!(o.open(&d, NOW).unwrap(), payload);
        }
    }

    #[test]
    fn too_short_at_every_length_below_the_overhead() {
        let d = seal(KEY, NOW, nonce(1), b"");
        for len in 0..OVERHEAD {
            assert_eq!(
                opener().open(&d[..len], NOW),
                Err(Rejection::TooShort { len })
            );
        }
        assert!(opener().open(&d, NOW).is_ok());
    }

    #[test]
    fn wrong_version_is_refused_before_the_tag() {
        let mut d = seal(KEY, NOW, nonce(1), b"payload");
        for v in [0u8, 2, 0x7b, 0xff] {
            d[0] = v;
            assert_eq!(opener().open(&d, NOW), Err(Rejection::BadVersion(v)));
        }
    }

    #[test]
    fn any_flipped_bit_breaks_the_tag() {
        let d = seal(KEY, NOW, nonce(1), b"payload");
        // Every byte but the version (which fails earlier), each bit.
        for i in 1..d.len() {
            for bit in 0..8 {
                let mut bad = d.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(
                    opener().open(&bad, NOW),
                    Err(Rejection::BadTag),
                    "{i}/{bit}"
                );
            }
        }
        let other = seal(b"another key", NOW, nonce(1), b"payload");
        assert_eq!(opener().open(&other, NOW), Err(Rejection::BadTag));
        // A payload moved into the tag's place: lengths are not confusable.
        let mut longer = d.clone();
        longer.push(0);
        assert_eq!(opener().open(&longer, NOW), Err(Rejection::BadTag));
    }

    #[test]
    fn the_window_is_inclusive_both_ways() {
        let at = |ts| {
            opener()
                .open(&seal(KEY, ts, nonce(1), b"p"), NOW)
                .map(|_| ())
        };
        assert_eq!(at(NOW - WINDOW), Ok(()));
        assert_eq!(at(NOW + WINDOW), Ok(()));
        assert_eq!(
            at(NOW - WINDOW - 1),
            Err(Rejection::TooOld {
                timestamp_ms: NOW - WINDOW - 1,
                oldest_ms: NOW - WINDOW
            })
        );
        assert_eq!(
            at(NOW + WINDOW + 1),
            Err(Rejection::TooNew {
                timestamp_ms: NOW + WINDOW + 1,
                newest_ms: NOW + WINDOW
            })
        );
        // Clocks near the ends of the range do not overflow.
        assert!(opener().open(&seal(KEY, 0, nonce(1), b""), 0).is_ok());
        assert!(opener()
            .open(&seal(KEY, u64::MAX, nonce(1), b""), u64::MAX)
            .is_ok());
    }

    #[test]
    fn a_replay_is_refused_while_it_could_be_fresh() {
        let mut o = opener();
        let d = seal(KEY, NOW, nonce(1), b"once");
        assert!(o.open(&d, NOW).is_ok());
        assert_eq!(o.open(&d, NOW), Err(Rejection::Replayed));
        assert_eq!(o.open(&d, NOW + WINDOW), Err(Rejection::Replayed));
        // Once outside the window it is too old, and forgotten.
        assert!(matches!(
            o.open(&d, NOW + WINDOW + 1),
            Err(Rejection::TooOld { .. })
        ));
        // The same nonce at another time is another datagram.
        assert!(o.open(&seal(KEY, NOW + 1, nonce(1), b"once"), NOW).is_ok());
    }

    #[test]
    fn expired_entries_are_forgotten() {
        let mut o = opener();
        for i in 0..100u8 {
            o.open(&seal(KEY, NOW, nonce(i), b""), NOW).unwrap();
        }
        assert_eq!(o.remembered(), 100);
        let later = NOW + WINDOW + 1;
        o.open(&seal(KEY, later, nonce(0), b""), later).unwrap();
        assert_eq!(o.remembered(), 1);
    }

    #[test]
    fn a_full_memory_forgets_the_oldest_and_refuses_anything_that_old() {
        let mut o = Opener::new(keys(&[KEY]), WINDOW, 3);
        // Received a little later than sent, as usual (none dated ahead).
        let now = NOW + 100;
        let d: Vec<Vec<u8>> = (0..4u8)
            .map(|i| seal(KEY, NOW + u64::from(i), nonce(i), b""))
            .collect();
        for datagram in &d {
            o.open(datagram, now).unwrap();
        }
        assert_eq!(o.remembered(), 3);
        // d[0] was forgotten: its replay is refused by the floor, not let in.
        assert_eq!(
            o.open(&d[0], now),
            Err(Rejection::TooOld {
                timestamp_ms: NOW,
                oldest_ms: NOW + 1
            })
        );
        for datagram in &d[1..] {
            assert_eq!(o.open(datagram, now), Err(Rejection::Replayed));
        }
        // Newer datagrams still come in, and memory stays at the cap.
        for i in 10..50u8 {
            o.open(&seal(KEY, NOW + u64::from(i), nonce(i), b""), now)
                .unwrap();
            assert!(o.remembered() <= 3);
        }
        // A fresh datagram older than everything remembered is refused when
        // remembering it would need an eviction.
        let mut o = Opener::new(keys(&[KEY]), WINDOW, 1);
        o.open(&seal(KEY, NOW, nonce(1), b""), NOW).unwrap();
        assert!(matches!(
            o.open(&seal(KEY, NOW - 5, nonce(2), b""), NOW),
            Err(Rejection::TooOld { .. })
        ));
    }

    #[test]
    fn rotation_accepts_every_key() {
        let mut o = Opener::new(keys(&[b"new", b"old"]), WINDOW, 10);
        assert!(o.open(&seal(b"new", NOW, nonce(1), b"a"), NOW).is_ok());
        assert!(o.open(&seal(b"old", NOW, nonce(2), b"b"), NOW).is_ok());
        assert_eq!(
            o.open(&seal(b"neither", NOW, nonce(3), b"c"), NOW),
            Err(Rejection::BadTag)
        );
    }

    #[test]
    fn checks_run_in_order() {
        // A forged datagram from far in the past counts as a bad tag, not as
        // too old: only authenticated datagrams reach the clock.
        let mut d = seal(KEY, 0, nonce(1), b"p");
        let last = d.len() - 1;
        d[last] ^= 1;
        assert_eq!(opener().open(&d, NOW), Err(Rejection::BadTag));
    }
}
