//! Sockets you already have, several processes on one port, and a real
//! load balancer in front: echo_server as the child process each time.

use super::*;

/// A command that starts echo_server with `listener` as descriptor `target`
/// in the child (and nowhere else once the parent drops it), after `env`.
fn echo_server_inheriting(
    listener: &std::net::TcpListener,
    target: i32,
    env: &str,
    args: &[&str],
) -> Command {
    echo_server_inheriting_all(&[(listener, target)], env, args)
}

/// The same with several listeners, each as its target descriptor.
fn echo_server_inheriting_all(
    listeners: &[(&std::net::TcpListener, i32)],
    env: &str,
    args: &[&str],
) -> Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fds: Vec<(i32, i32)> = listeners
        .iter()
        .map(|(l, target)| (l.as_raw_fd(), *target))
        .collect();
    // sh sets LISTEN_PID to its own pid, which exec keeps for echo_server.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{env} exec \"$0\" \"$@\""))
        .arg(built().examples.join("echo_server"))
        .args(args)
        .env("SOCKSERV_KEY", KEY);
    // SAFETY: between fork and exec the closure only calls fcntl(2),
    // dup2(2) and close(2), which are async-signal-safe, on descriptors this
    // process owns; it allocates nothing (the Vec was made before fork).
    unsafe {
        cmd.pre_exec(move || {
            // First every source to a high descriptor, so that no target
            // overwrites a source still to be moved; then each to its target
            // (dup2 clears close-on-exec), and the high copies closed.
            const HIGH: i32 = 200;
            for (i, &(fd, _)) in fds.iter().enumerate() {
                if libc::fcntl(fd, libc::F_DUPFD, HIGH + i as i32) != HIGH + i as i32 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &(_, target)) in fds.iter().enumerate() {
                if libc::dup2(HIGH + i as i32, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(HIGH + i as i32);
            }
            Ok(())
        });
    }
    cmd
}

fn keyed() -> sockserv::Config {
    let mut config = sockserv::Config::default();
    config.set_key(KEY.as_bytes()).unwrap();
    config
}

fn roundtrip(conn: &sockserv::Connection, payload: &[u8]) {
    conn.send(payload).unwrap();
    assert_eq!(conn.recv_with(|f| f.to_vec()).unwrap(), payload);
}

#[test]
fn systemd_socket_activation_and_inetd_style_fds() {
    for (target, env, addr) in [
        (
            3,
            "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=echo;",
            "systemd://echo",
        ),
        (3, "export LISTEN_PID=$$ LISTEN_FDS=1;", "systemd://"),
        (7, "", "fd://7"),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let expected = format!("tcp://{}", listener.local_addr().unwrap());
        let server = EchoServer::spawn(
            echo_server_inheriting(&listener, target, env, &[addr]),
            RUN_LIMIT,
        );
        drop(listener); // the child holds the only copy now
        assert_eq!(server.addr, expected, "{addr}");
        let conn = sockserv::connect(&server.addr, &keyed()).unwrap();
        roundtrip(&conn, addr.as_bytes());
        let (status, stderr) = server.stop(libc::SIGTERM, RUN_LIMIT);
        assert!(status.success(), "{addr}: {stderr}");
    }
    // Several sockets (LISTEN_FDS=3 at descriptors 3, 4, 5): each address
    // picks its own, by position from 0 (systemd://1 is the second) or by
    // name. Fresh listeners each time: a server's shutdown shuts down the
    // listening socket it shares with this process.
    let env = "export LISTEN_PID=$$ LISTEN_FDS=3 LISTEN_FDNAMES=first:second:third;";
    let three = || -> (Vec<std::net::TcpListener>, Vec<String>) {
        let listeners: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let bound = listeners
            .iter()
            .map(|l| format!("tcp://{}", l.local_addr().unwrap()))
            .collect();
        (listeners, bound)
    };
    for (addr, which) in [
        ("systemd://", 0),
        ("systemd://0", 0),
        ("systemd://1", 1),
        ("systemd://2", 2),
        ("systemd://second", 1),
        ("systemd://third", 2),
    ] {
        let (listeners, bound) = three();
        let inherit: Vec<(&std::net::TcpListener, i32)> = listeners.iter().zip(3..).collect();
        let server = EchoServer::spawn(
            echo_server_inheriting_all(&inherit, env, &[addr]),
            RUN_LIMIT,
        );
        drop(listeners);
        assert_eq!(server.addr, bound[which], "{addr} with LISTEN_FDS=3");
        let conn = sockserv::connect(&server.addr, &keyed()).unwrap();
        roundtrip(&conn, addr.as_bytes());
        let (status, stderr) = server.stop(libc::SIGTERM, RUN_LIMIT);
        assert!(status.success(), "{addr}: {stderr}");
    }
    // A position past LISTEN_FDS is refused with a message.
    let (listeners, _) = three();
    let inherit: Vec<(&std::net::TcpListener, i32)> = listeners.iter().zip(3..).collect();
    let output = run(
        &mut echo_server_inheriting_all(&inherit, env, &["systemd://3"]),
        RUN_LIMIT,
        "echo_server systemd://3 with LISTEN_FDS=3",
    );
    assert!(!output.status.success(), "{}", show(&output));
    assert!(stderr(&output).contains("3 passed"), "{}", show(&output));
    drop(listeners);

    // Meant for another process (LISTEN_PID is not the server's): refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = echo_server_inheriting(
        &listener,
        3,
        "export LISTEN_PID=1 LISTEN_FDS=1;",
        &["systemd://"],
    );
    let output = run(
        &mut cmd,
        RUN_LIMIT,
        "echo_server systemd:// for another pid",
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("LISTEN_PID"), "{}", show(&output));
}

/// Sockets a process holds open, from /proc.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn reuse_port_spreads_connections_over_processes() {
    let exe = built().examples.join("echo_server");
    let spawn = |addr: &str| {
        let mut cmd = Command::new(&exe);
        cmd.args(["-r", addr]).env("SOCKSERV_KEY", KEY);
        EchoServer::spawn(cmd, RUN_LIMIT)
    };
    let first = spawn("tcp://127.0.0.1:0");
    let mut servers = vec![spawn(&first.addr), spawn(&first.addr)];
    servers.insert(0, first);
    let addr = servers[0].addr.clone();
    let before: Vec<usize> = servers
        .iter()
        .map(|s| open_sockets(s.child.child.id()))
        .collect();
    let conns: Vec<_> = (0..60)
        .map(|i| {
            let c = sockserv::connect(&addr, &keyed()).unwrap();
            roundtrip(&c, format!("client {i}").as_bytes());
            c
        })
        .collect();
    let gained: Vec<usize> = servers
        .iter()
        .zip(&before)
        .map(|(s, b)| open_sockets(s.child.child.id()).saturating_sub(*b))
        .collect();
    assert_eq!(gained.iter().sum::<usize>(), 60, "{gained:?}");
    assert!(
        gained.iter().all(|&g| g > 0),
        "the kernel used only some processes: {gained:?}"
    );
    // Two processes die; the third takes every new connection.
    drop(conns);
    let survivor = servers.pop().unwrap();
    drop(servers); // SIGKILL
    for i in 0..20 {
        let c = sockserv::connect(&addr, &keyed()).unwrap();
        roundtrip(&c, format!("after {i}").as_bytes());
    }
    let (status, _) = survivor.stop(libc::SIGTERM, RUN_LIMIT);
    assert!(status.success());
    eprintln!("SO_REUSEPORT: 60 connections over 3 processes: {gained:?}");
}

/// A port nobody listens on right now (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `frames` frames one at a time through `addr`, each acknowledged
/// by its echo; a broken connection is replaced and the unacknowledged
/// frame sent again. Returns the local addresses it used.
fn send_acknowledged(
    addr: &str,
    client: usize,
    frames: u32,
    acked: &std::sync::atomic::AtomicU32,
) -> Vec<String> {
    let mut used = Vec::new();
    let mut conn: Option<sockserv::Connection> = None;
    let mut seq = 0;
    let mut failures = 0;
    while seq < frames {
        assert!(failures < 50, "client {client}: too many failed attempts");
        let c = match conn.take() {
            Some(c) => c,
            None => match sockserv::connect(addr, &keyed()) {
                Ok(c) => {
                    c.set_timeout(Some(Duration::from_secs(10)));
                    used.push(c.local_addr().to_string());
                    c
                }
                Err(_) => {
                    failures += 1;
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        let payload = format!("client {client} frame {seq}");
        let echoed = c
            .send(payload.as_bytes())
            .and_then(|()| c.recv_with(|f| f.to_vec()));
        match echoed {
            Ok(back) => {
                assert_eq!(
                    back,
                    payload.as_bytes(),
                    "an acknowledged frame came back wrong"
                );
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                seq += 1;
                conn = Some(c);
            }
            // The backend died: reconnect and send the same frame again.
            Err(_) => failures += 1,
        }
    }
    used
}

#[test]
fn haproxy_in_front_of_two_servers() {
    let found = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        return skip::required(
            "haproxy_in_front_of_two_servers",
            "haproxy is not installed (apt-get install haproxy)",
        );
    }
    let exe = built().examples.join("echo_server");
    let backend = || {
        let mut cmd = Command::new(&exe);
        cmd.args(["-p", "-v", "tcp://127.0.0.1:0"])
            .env("SOCKSERV_KEY", KEY);
        EchoServer::spawn(cmd, RUN_LIMIT)
    };
    let backends = [backend(), backend()];
    let front = free_port();
    let dir = TempDir::new("haproxy");
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let hostport = b.addr.trim_start_matches("tcp://");
            format!("    server s{i} {hostport} send-proxy-v2 check inter 200ms fall 1 rise 1\n")
        })
        .collect();
    let config = format!(
        "global\n    maxconn 256\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
         frontend sockserv\n    bind 127.0.0.1:{front}\n    default_backend servers\n\
         backend servers\n    balance roundrobin\n{servers}"
    );
    let cfg = dir.0.join("haproxy.cfg");
    std::fs::write(&cfg, &config).unwrap();
    let haproxy = ChildGuard::new(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    let addr = format!("tcp://127.0.0.1:{front}");
    let ready = (0..100).any(|_| {
        let up = std::net::TcpStream::connect(("127.0.0.1", front)).is_ok();
        if !up {
            thread::sleep(Duration::from_millis(50));
        }
        up
    });
    assert!(ready, "haproxy did not start listening:\n{config}");

    // Four clients through HAProxy; once they are under way, one backend dies.
    const CLIENTS: usize = 4;
    const FRAMES: u32 = 300;
    let acked = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (addr, acked) = (addr.clone(), acked.clone());
            // When the client finished: one that finished before the kill
            // had nothing to reconnect for.
            thread::spawn(move || (send_acknowledged(&addr, i, FRAMES, &acked), Instant::now()))
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(30);
    while acked.load(std::sync::atomic::Ordering::SeqCst) < (CLIENTS as u32 * FRAMES) / 3
        && Instant::now() < end
    {
        thread::sleep(Duration::from_millis(5));
    }
    let [killed, survivor] = backends;
    let killed_log = {
        let mut killed = killed;
        killed.child.signal(libc::SIGKILL);
        killed.child.wait_for(RUN_LIMIT);
        killed.stderr.take().unwrap().collect_string(PIPE_LIMIT)
    };
    // The killed backend is reaped: nothing can be served by it after this.
    let killed_at = Instant::now();
    let finished: Vec<(Vec<String>, Instant)> =
        clients.into_iter().map(|c| c.join().unwrap()).collect();
    let per_client: Vec<&Vec<String>> = finished.iter().map(|(conns, _)| conns).collect();
    let used: Vec<String> = per_client.iter().copied().flatten().cloned().collect();
    assert_eq!(
        acked.load(std::sync::atomic::Ordering::SeqCst),
        CLIENTS as u32 * FRAMES
    );
    let (status, survivor_log) = survivor.stop(libc::SIGTERM, RUN_LIMIT);
    assert!(status.success(), "{survivor_log}");
    drop(haproxy);
    // Both backends served clients, and saw the clients' own addresses
    // (their ports), not HAProxy's.
    let logs = format!("{killed_log}{survivor_log}");
    for local in &used {
        assert!(
            logs.contains(&format!("connection from {local}\n")),
            "no backend saw client {local}:\n{logs}"
        );
    }
    assert!(killed_log.contains("connection from") && survivor_log.contains("connection from"));
    // The kill hit clients mid-way, and each of them reconnected: a client
    // whose connection was on the killed backend made another, on the
    // survivor, and finished there (every frame was acknowledged above).
    let seen_by = |log: &str, local: &str| log.contains(&format!("connection from {local}\n"));
    // Only a client still under way once the backend was gone must have
    // reconnected; one that finished before the kill (a fast client on a
    // loaded machine) had no reason to.
    let hit: Vec<&Vec<String>> = finished
        .iter()
        .filter(|(conns, done)| *done > killed_at && conns.iter().any(|c| seen_by(&killed_log, c)))
        .map(|(conns, _)| conns)
        .collect();
    assert!(
        !hit.is_empty(),
        "no client was still under way on the killed backend when it died:\n{logs}"
    );
    for conns in &hit {
        let last = conns.last().unwrap();
        assert!(
            conns.len() >= 2 && seen_by(&survivor_log, last) && !seen_by(&killed_log, last),
            "a client on the killed backend did not reconnect to the survivor: {conns:?}\n{logs}"
        );
    }
    eprintln!(
        "haproxy: {} frames acknowledged by {CLIENTS} clients over {} connections, one backend \
         killed, {} clients reconnected",
        CLIENTS as u32 * FRAMES,
        used.len(),
        hit.len()
    );
}
