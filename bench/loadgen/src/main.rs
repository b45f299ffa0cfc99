//! loadgen: opens C connections (plus I idle ones) to a framed echo server,
//! keeps D frames of S bytes in flight on each, checks every echoed byte and
//! its order, and reports frames/s, MB/s and round-trip percentiles as one
//! JSON line on stdout and a human line on stderr. Any mismatch, lost frame
//! or dropped connection aborts with exit code 1. With --tls-ca it speaks
//! TLS (rustls, full handshakes: no resumption); with --churn it measures
//! connections/s instead: each connection, once its ping is echoed, is
//! closed and opened anew.

mod conn;
mod hist;
mod pattern;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use conn::{Conn, Ctx, Phase, Stats};
use pattern::Pattern;

const USAGE: &str = "usage: loadgen --addr HOST:PORT [options]
  -c, --connections N   active connections (default 1)
  -d, --depth D         frames in flight per active connection (default 1)
  -s, --size S          payload bytes per frame, K/M suffixes = KiB/MiB (default 64)
      --duration SECS   measured time (default 5)
      --frames N        measure N frames instead of a duration
      --warmup SECS     traffic before measuring (default 1)
      --idle N          extra connections, set up and held idle (default 0)
      --key KEY         run the sockserv/Python 3.12 HMAC-SHA256 handshake
      --tls-ca FILE     TLS (1.3, or 1.2 if that is all the server has), the server's
                        certificate checked against the CA in FILE for the name localhost
      --churn           connections/s: once a connection's ping is echoed, close it
                        and open another (TCP + TLS + HMAC handshake + ping each)
      --threads T       client threads (default 1)
      --rss-pid PID     report VmRSS of PID before connecting, connected, at the end
      --setup-timeout S seconds to establish every connection (default 60)
      --drain-timeout S seconds for the last frames to come back (default 10)
      --connect-window N connections being set up at once, per thread (default 64)";

struct Opts {
    addr: SocketAddr,
    conns: usize,
    idle: usize,
    depth: u64,
    size: usize,
    duration: Duration,
    frames: Option<u64>,
    warmup: Duration,
    key: Option<Vec<u8>>,
    tls_ca: Option<String>,
    churn: bool,
    threads: usize,
    rss_pid: Option<u32>,
    setup_timeout: Duration,
    drain_timeout: Duration,
    connect_window: usize,
}

fn die(msg: &str) -> ! {
    let esc = msg.replace('\\', "\\\\").replace('"', "\\\"");
    println!("{{\"ok\":false,\"error\":\"{esc}\"}}");
    eprintln!("loadgen: error: {msg}");
    std::process::exit(1);
}

fn parse_size(s: &str) -> Option<usize> {
    let (num, mul) = match s.trim_end_matches("iB").trim_end_matches('B') {
        t if t.ends_with(['k', 'K']) => (&t[..t.len() - 1], 1024),
        t if t.ends_with('M') => (&t[..t.len() - 1], 1024 * 1024),
        t => (t, 1),
    };
    num.parse::<usize>().ok().map(|n| n * mul)
}

fn parse_args() -> Opts {
    let mut o = Opts {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        conns: 1,
        idle: 0,
        depth: 1,
        size: 64,
        duration: Duration::from_secs(5),
        frames: None,
        warmup: Duration::from_secs(1),
        key: None,
        tls_ca: None,
        churn: false,
        threads: 1,
        rss_pid: None,
        setup_timeout: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(10),
        connect_window: 64,
    };
    let mut have_addr = false;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--churn" {
            o.churn = true;
            i += 1;
            continue;
        }
        let val = args
            .get(i + 1)
            .unwrap_or_else(|| die(&format!("{flag} needs a value\n{USAGE}")));
        let bad = || -> ! { die(&format!("bad value for {flag}: {val}")) };
        let secs = || Duration::from_secs_f64(val.parse::<f64>().unwrap_or_else(|_| bad()));
        let num = || val.parse::<usize>().unwrap_or_else(|_| bad());
        match flag {
            "--addr" => {
                let a = val.strip_prefix("tcp://").unwrap_or(val);
                o.addr = a
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut it| it.next())
                    .unwrap_or_else(|| bad());
                have_addr = true;
            }
            "-c" | "--connections" => o.conns = num(),
            "-d" | "--depth" => o.depth = num() as u64,
            "-s" | "--size" => o.size = parse_size(val).unwrap_or_else(|| bad()),
            "--duration" => o.duration = secs(),
            "--frames" => o.frames = Some(num() as u64),
            "--warmup" => o.warmup = secs(),
            "--idle" => o.idle = num(),
            "--key" => o.key = Some(val.as_bytes().to_vec()),
            "--tls-ca" => o.tls_ca = Some(val.clone()),
            "--threads" => o.threads = num(),
            "--rss-pid" => o.rss_pid = Some(num() as u32),
            "--setup-timeout" => o.setup_timeout = secs(),
            "--drain-timeout" => o.drain_timeout = secs(),
            "--connect-window" => o.connect_window = num(),
            _ => die(&format!("unknown option {flag}\n{USAGE}")),
        }
        i += 2;
    }
    if !have_addr {
        die(&format!("--addr is required\n{USAGE}"));
    }
    if o.conns == 0 || o.depth == 0 || o.threads == 0 || o.connect_window == 0 {
        die("connections, depth, threads and connect-window must be at least 1");
    }
    if o.size > i32::MAX as usize {
        die("size must fit a 4-byte header");
    }
    if o.key.as_deref() == Some(b"") {
        die("an empty key is not a key");
    }
    o.threads = o.threads.min(o.conns);
    o
}

/// Raises the soft open-file limit to the hard one: 10,000 connections
/// need more than the usual 1024.
fn raise_nofile(need: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    if (lim.rlim_cur as usize) < need {
        die(&format!(
            "{need} file descriptors needed, RLIMIT_NOFILE allows {}",
            lim.rlim_cur
        ));
    }
}

/// The TLS client configuration: ring, the CA file as the only trust
/// anchor, no session resumption (every churned connection does a full
/// handshake, as the other libraries' clients do).
fn tls_config(ca: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .unwrap_or_else(|e| die(&format!("--tls-ca {ca}: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| die(&format!("--tls-ca {ca}: {e}")));
    for c in certs {
        roots
            .add(c)
            .unwrap_or_else(|e| die(&format!("--tls-ca {ca}: {e}")));
    }
    if roots.is_empty() {
        die(&format!("--tls-ca {ca}: no certificate in it"));
    }
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| die(&format!("TLS: {e}")))
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

fn rss_kb(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What one thread measured.
struct Outcome {
    stats: Stats,
    measured: Duration,
    setup: Duration,
    conns: Vec<Conn>,
}

struct Sync {
    connected: Barrier,
    go: Barrier,
}

/// Churn: closes the connection in `slot` and opens another in its place.
fn reconnect(
    conns: &mut [Conn],
    slot: usize,
    poll: &Poll,
    o: &Opts,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(), String> {
    let (id, active) = (conns[slot].id, conns[slot].active);
    let mut old = std::mem::replace(&mut conns[slot], Conn::connect(id, active, o.addr, tls)?);
    old.close_tls();
    let _ = poll.registry().deregister(&mut old.stream);
    drop(old);
    poll.registry()
        .register(
            &mut conns[slot].stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(|e| format!("epoll_ctl: {e}"))
}

fn run_thread(
    o: &Opts,
    pattern: &Pattern,
    ids: Vec<(u32, bool)>,
    sync: &Sync,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Outcome, String> {
    let t_setup = Instant::now();
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut ctx = Ctx {
        pattern,
        key: o.key.as_deref(),
        depth: o.depth,
        churn: o.churn,
        sending: false,
        measuring: false,
        stats: Stats::default(),
        // Large reads, yet small enough that each chunk is still in the
        // cache when it is checked.
        rbuf: vec![0; 256 * 1024],
        scratch: Vec::with_capacity(256 * 1024 + 4096),
    };
    let mut conns: Vec<Conn> = Vec::with_capacity(ids.len());
    let mut ready = 0;
    let deadline = t_setup + o.setup_timeout;
    while ready < ids.len() {
        // Open a window of connections at a time, so neither the server's
        // accept queue nor its SYN backlog overflows (a dropped SYN costs 1 s).
        while conns.len() < ids.len() && conns.len() - ready < o.connect_window {
            let (id, active) = ids[conns.len()];
            let mut c = Conn::connect(id, active, o.addr, tls)?;
            poll.registry()
                .register(
                    &mut c.stream,
                    Token(conns.len()),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("epoll_ctl: {e}"))?;
            conns.push(c);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {ready} of {} connections of this thread were set up within {:?}",
                ids.len(),
                o.setup_timeout
            ));
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(|e| format!("epoll_wait: {e}"))?;
        for ev in events.iter() {
            let now = Instant::now();
            let c = &mut conns[ev.token().0];
            let was_ready = c.phase == Phase::Ready;
            c.on_event(&mut ctx, now)?;
            if !was_ready && c.phase == Phase::Ready {
                ready += 1;
            }
        }
    }
    let setup = t_setup.elapsed();
    sync.connected.wait();
    sync.go.wait();

    let start = Instant::now();
    let warm_end = start + o.warmup;
    let per_thread_frames = o.frames.map(|f| f.div_ceil(o.threads as u64));
    let hard_end = warm_end + o.frames.map_or(o.duration, |_| Duration::from_secs(600));
    ctx.sending = true;
    for c in conns.iter_mut().filter(|c| c.active) {
        c.kick(&mut ctx, start)?;
    }
    if o.churn {
        for slot in 0..conns.len() {
            reconnect(&mut conns, slot, &poll, o, tls)?;
        }
    }
    let (mut m_start, mut m_stop) = (None, None);
    let mut drain_deadline = hard_end;
    loop {
        let now = Instant::now();
        if m_start.is_none() && now >= warm_end {
            m_start = Some(now);
            ctx.measuring = true;
        }
        let done = match per_thread_frames {
            Some(n) => ctx.stats.frames >= n || now >= hard_end,
            None => now >= hard_end,
        };
        if ctx.measuring && done {
            if now >= hard_end && per_thread_frames.is_some() {
                return Err(format!(
                    "{} frames not measured within {:?}",
                    o.frames.unwrap(),
                    hard_end - warm_end
                ));
            }
            ctx.measuring = false;
            ctx.sending = false;
            m_stop = Some(now);
            drain_deadline = now + o.drain_timeout;
        }
        if m_stop.is_some() {
            // Every frame sent must come back before we call it a pass
            // (churn: every connection under way must be set up).
            let lost: u64 = conns.iter().map(|c| c.in_flight()).sum();
            let setting_up = conns.iter().any(|c| c.phase != Phase::Ready);
            if lost == 0 && !setting_up && !conns.iter().any(|c| c.write_pending()) {
                break;
            }
            if now > drain_deadline {
                return Err(format!(
                    "{lost} frames did not come back within {:?}",
                    o.drain_timeout
                ));
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .map_err(|e| format!("epoll_wait: {e}"))?;
        for ev in events.iter() {
            let now = Instant::now();
            let slot = ev.token().0;
            let was_ready = conns[slot].phase == Phase::Ready;
            conns[slot].on_event(&mut ctx, now)?;
            if o.churn && !was_ready && conns[slot].phase == Phase::Ready {
                // Connected, handshaken, echoed: counted, closed, replaced.
                let c = &conns[slot];
                ctx.stats.all_frames += 1;
                if ctx.measuring {
                    ctx.stats.frames += 1;
                    ctx.stats
                        .hist
                        .record_n(now.duration_since(c.started).as_nanos() as u64, 1);
                }
                if ctx.sending {
                    reconnect(&mut conns, slot, &poll, o, tls)?;
                }
            }
        }
    }
    let measured = m_stop.unwrap() - m_start.unwrap();
    Ok(Outcome {
        stats: ctx.stats,
        measured,
        setup,
        conns,
    })
}

fn main() {
    let o = Arc::new(parse_args());
    let total = o.conns + o.idle;
    raise_nofile(total + 64);
    let pattern = Arc::new(Pattern::new(o.size));
    let tls = o.tls_ca.as_deref().map(tls_config);
    let sync = Arc::new(Sync {
        connected: Barrier::new(o.threads + 1),
        go: Barrier::new(o.threads + 1),
    });
    let rss_before = rss_kb(o.rss_pid);

    // Idle connections first, then the active ones, dealt round-robin.
    let mut per_thread: Vec<Vec<(u32, bool)>> = vec![Vec::new(); o.threads];
    for i in 0..total {
        per_thread[i % o.threads].push((i as u32, i >= o.idle));
    }
    let handles: Vec<_> = per_thread
        .into_iter()
        .enumerate()
        .map(|(t, ids)| {
            let (o, pattern, sync, tls) = (o.clone(), pattern.clone(), sync.clone(), tls.clone());
            thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || {
                    run_thread(&o, &pattern, ids, &sync, tls.as_ref()).unwrap_or_else(|e| die(&e))
                })
                .unwrap_or_else(|e| die(&format!("spawning a thread: {e}")))
        })
        .collect();
    sync.connected.wait();
    // Let the server finish with the last handshakes before measuring it.
    thread::sleep(Duration::from_millis(300));
    let rss_connected = rss_kb(o.rss_pid);
    sync.go.wait();

    let outcomes: Vec<Outcome> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| die("a thread panicked")))
        .collect();
    let rss_end = rss_kb(o.rss_pid);
    report(&o, &outcomes, [rss_before, rss_connected, rss_end]);
    drop(outcomes);
}

fn report(o: &Opts, outcomes: &[Outcome], rss: [Option<u64>; 3]) {
    let mut hist = hist::Hist::default();
    let (mut frames, mut bytes, mut fps, mut bps) = (0u64, 0u64, 0f64, 0f64);
    let mut all_frames = 0;
    let mut setup = Duration::ZERO;
    let mut measured = Duration::ZERO;
    for out in outcomes {
        hist.merge(&out.stats.hist);
        frames += out.stats.frames;
        all_frames += out.stats.all_frames;
        bytes += out.stats.bytes;
        let secs = out.measured.as_secs_f64().max(1e-9);
        fps += out.stats.frames as f64 / secs;
        bps += out.stats.bytes as f64 / secs;
        setup = setup.max(out.setup);
        measured = measured.max(out.measured);
        debug_assert!(out.conns.iter().all(|c| c.phase == Phase::Ready));
    }
    let us = |q: f64| hist.quantile(q) as f64 / 1000.0;
    let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    println!(
        "{{\"ok\":true,\"addr\":\"{}\",\"connections\":{},\"idle\":{},\"depth\":{},\"size\":{},\"threads\":{},\
         \"key\":{},\"tls\":{},\"churn\":{},\"duration_s\":{:.3},\"setup_s\":{:.3},\"all_frames\":{all_frames},\"frames\":{frames},\"bytes\":{bytes},\
         \"frames_per_s\":{fps:.0},\"mb_per_s\":{:.2},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\
         \"max_us\":{:.1},\"rss_before_kb\":{},\"rss_connected_kb\":{},\"rss_end_kb\":{}}}",
        o.addr,
        o.conns,
        o.idle,
        o.depth,
        o.size,
        o.threads,
        o.key.is_some(),
        o.tls_ca.is_some(),
        o.churn,
        measured.as_secs_f64(),
        setup.as_secs_f64(),
        bps / 1e6,
        us(0.5),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1000.0,
        opt(rss[0]),
        opt(rss[1]),
        opt(rss[2]),
    );
    eprintln!(
        "loadgen: {} conns (+{} idle) x depth {} x {} B{}: {:.0} {}/s, {:.1} MB/s, p50 {:.1} us, p99 {:.1} us, \
         {frames} frames verified in {:.2} s (setup {:.2} s)",
        o.conns,
        o.idle,
        o.depth,
        o.size,
        if o.churn { ", churn" } else { "" },
        fps,
        if o.churn { "connections" } else { "frames" },
        bps / 1e6,
        us(0.5),
        us(0.99),
        measured.as_secs_f64(),
        setup.as_secs_f64()
    );
}
