//! Socket activation as systemd does it (`sd_listen_fds` semantics, without
//! linking libsystemd): the sockets start at descriptor 3, LISTEN_FDS says
//! how many, LISTEN_PID must be this process (else they were meant for a
//! parent), and LISTEN_FDNAMES may name them, colon-separated.

use std::os::fd::RawFd;

use crate::addr::stream::SystemdSocket;
use crate::error::{Error, ErrorKind, Result};

/// The first descriptor systemd passes.
pub(crate) const LISTEN_FDS_START: RawFd = 3;

/// The descriptors passed to this process, with their names if given.
/// Empty when none were (or they were meant for another process).
pub fn listen_fds() -> Result<Vec<(RawFd, Option<String>)>> {
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    if !pid_matches {
        return Ok(Vec::new());
    }
    let count = match std::env::var("LISTEN_FDS") {
        Ok(n) => n.parse::<RawFd>().map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("LISTEN_FDS={n:?} is not a number"),
            )
        })?,
        Err(_) => return Ok(Vec::new()),
    };
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    Ok((0..count.max(0))
        .map(|i| (LISTEN_FDS_START + i, names.get(i as usize).cloned()))
        .collect())
}

/// The descriptor `which` selects.
pub fn find(which: &SystemdSocket) -> Result<RawFd> {
    let fds = listen_fds()?;
    let found = match which {
        SystemdSocket::Index(i) => fds.get(*i),
        SystemdSocket::Name(name) => fds.iter().find(|(_, n)| n.as_deref() == Some(name)),
    };
    found.map(|(fd, _)| *fd).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidAddress,
            format!(
                "systemd passed no socket {} to this process ({} passed; LISTEN_PID must be {})",
                match which {
                    SystemdSocket::Index(i) => format!("#{i}"),
                    SystemdSocket::Name(n) => format!("named {n:?}"),
                },
                fds.len(),
                std::process::id()
            ),
        )
    })
}
