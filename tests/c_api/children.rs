//! The example programs as child processes.

use super::*;

// ---------------------------------------------------------------------------
// The example server as a child process.

pub(crate) struct EchoServer {
    pub(crate) child: ChildGuard,
    pub(crate) addr: String,
    pub(crate) stderr: Option<Drain>,
}

impl EchoServer {
    /// Starts `echo_server ADDR` (under `wrapper`, e.g. valgrind, if given)
    /// with the key in SOCKSERV_KEY, and reads the address it prints.
    pub(crate) fn start(addr: &str, wrapper: &[String], limit: Duration) -> EchoServer {
        EchoServer::start_in(&built().examples, addr, wrapper, limit)
    }

    /// The same with the echo_server built in `dir` (a sanitizer build).
    pub(crate) fn start_in(
        dir: &Path,
        addr: &str,
        wrapper: &[String],
        limit: Duration,
    ) -> EchoServer {
        let exe = dir.join("echo_server");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&exe);
                cmd
            }
            None => Command::new(&exe),
        };
        cmd.arg(addr).env("SOCKSERV_KEY", KEY);
        EchoServer::spawn(cmd, limit)
    }

    /// Runs a prepared echo_server command and reads the address it prints.
    pub(crate) fn spawn(mut cmd: Command, limit: Duration) -> EchoServer {
        let child = without_cargo_library_path(&mut cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start echo_server");
        let mut child = ChildGuard::new(child);
        let lines = read_lines(child.child.stdout.take().expect("stdout"));
        let stderr = drain(child.child.stderr.take().expect("stderr"));
        let Ok(first) = lines.recv_timeout(limit) else {
            drop(child); // kill it, so its stderr pipe closes
            panic!(
                "echo_server printed no address within {limit:?}; stderr:\n{}",
                stderr.collect_string(PIPE_LIMIT)
            )
        };
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        EchoServer {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    /// Sends `signal` and waits for a clean exit; returns the server's stderr.
    pub(crate) fn stop(mut self, signal: libc::c_int, limit: Duration) -> (ExitStatus, String) {
        self.child.signal(signal);
        let status = self.child.wait_for(limit);
        let stderr = self
            .stderr
            .take()
            .expect("stderr")
            .collect_string(PIPE_LIMIT);
        let status = status
            .unwrap_or_else(|| panic!("echo_server did not stop within {limit:?}:\n{stderr}"));
        (status, stderr)
    }
}

/// Runs an example client (`echo_client` or `raii_client`).
pub(crate) fn client(
    name: &str,
    wrapper: &[String],
    key_env: Option<&str>,
    args: &[&str],
) -> Output {
    client_in(&built().examples, name, wrapper, key_env, args)
}

/// The same with the clients built in `dir` (a sanitizer build).
pub(crate) fn client_in(
    dir: &Path,
    name: &str,
    wrapper: &[String],
    key_env: Option<&str>,
    args: &[&str],
) -> Output {
    let exe = dir.join(name);
    assert!(exe.exists(), "{} was not built", exe.display());
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(&exe);
            cmd
        }
        None => Command::new(&exe),
    };
    cmd.args(args).env_remove("SOCKSERV_KEY");
    if let Some(key) = key_env {
        cmd.env("SOCKSERV_KEY", key);
    }
    run(&mut cmd, VALGRIND_LIMIT, name)
}
