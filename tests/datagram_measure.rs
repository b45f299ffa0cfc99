//! Measurements behind the numbers in docs/DATAGRAM.md; ignored by default
//! (they time things, so they belong in a release build on a quiet machine):
//!
//!     cargo test --release --test datagram_measure -- --ignored --nocapture --test-threads 1
//!
//! Each loop is bounded in count and time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockserv::proto::sealed::{seal, Opener};
use sockserv::Take;
use sockserv::{Config, DgramServer, DgramSocket};

/// Counts live heap bytes, to weigh the replay memory.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
#[ignore]
fn seal_and_open_cost() {
    let keys: sockserv::proto::handshake::Keys = Arc::from(vec![b"measure key".to_vec()]);
    for size in [64usize, 1024, 8192] {
        let payload = vec![7u8; size];
        let n = 20_000u64;
        let started = Instant::now();
        let sealed: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&i.to_be_bytes());
                seal(b"measure key", 1_000_000, nonce, &payload)
            })
            .collect();
        let seal_ns = started.elapsed().as_nanos() / u128::from(n);
        let mut opener = Opener::new(keys.clone(), 30_000, 1 << 20);
        let started = Instant::now();
        for d in &sealed {
            opener.open(d, 1_000_000).unwrap();
        }
        let open_ns = started.elapsed().as_nanos() / u128::from(n);
        println!("payload {size:>5} B: seal {seal_ns:>6} ns, open (tag + window + replay) {open_ns:>6} ns");
    }
}

#[test]
#[ignore]
fn replay_memory_bytes_per_entry() {
    let keys: sockserv::proto::handshake::Keys = Arc::from(vec![b"k".to_vec()]);
    let capacity = 65_536usize;
    let sealed: Vec<Vec<u8>> = (0..capacity as u64)
        .map(|i| {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&i.to_be_bytes());
            // Timestamps spread over the window, as from many senders.
            seal(b"k", 1_000_000 + i % 20_000, nonce, b"")
        })
        .collect();
    let mut opener = Opener::new(keys, 30_000, capacity);
    let before = LIVE.load(Ordering::Relaxed);
    for d in &sealed {
        opener.open(d, 1_010_000).unwrap();
    }
    let used = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(opener.remembered(), capacity);
    println!(
        "replay memory: {capacity} entries take {} KiB, {} bytes each",
        used / 1024,
        used / capacity as isize
    );
}

fn round_trips(server_addr: &str, key: Option<&[u8]>, payload: usize) {
    let mut cfg = Config::default();
    if let Some(key) = key {
        cfg.set_key(key).unwrap();
    }
    cfg.set_io_timeout(Some(Duration::from_secs(5)));
    let server = DgramServer::bind(server_addr, &cfg).unwrap();
    server
        .set_handler(Arc::new(|sock: &DgramSocket, data: &[u8], from: &str| {
            let _ = sock.send_to(from, data);
        }))
        .unwrap();
    server.start().unwrap();
    let client = DgramSocket::connect(server.local_addr(), &cfg).unwrap();
    let data = vec![1u8; payload];
    let round_trip = || {
        client.send(&data).unwrap();
        let n = client.recv_with(|p, _| Take::Done(p.len())).unwrap();
        assert_eq!(n, payload);
    };
    // Warm up: buffers allocated, threads started.
    for _ in 0..100 {
        round_trip();
    }
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut n = 0u32;
    while n < 20_000 && started.elapsed() < LIMIT {
        round_trip();
        n += 1;
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let allocs = (ALLOCS.load(Ordering::Relaxed) - allocs_before) as f64 / f64::from(n);
    println!(
        "{:<10} {:<7} {payload:>5} B: {us:>6.1} us per round trip, {allocs:.2} allocations ({n} round trips)",
        server_addr.split("://").next().unwrap(),
        if key.is_some() { "sealed" } else { "plain" },
    );
}

#[test]
#[ignore]
fn echo_round_trip_latency() {
    let dir = std::env::temp_dir().join(format!("sockserv-measure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unix = format!("unixgram://{}/m.sock", dir.display());
    for payload in [64, 1024] {
        for key in [None, Some(&b"measure key"[..])] {
            round_trips("udp://127.0.0.1:0", key, payload);
            round_trips(&unix, key, payload);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
