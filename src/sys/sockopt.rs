//! The socket options users reach for, read and written by number so the C
//! API needs one getter and one setter (like setsockopt) instead of a pair
//! per option. The raw fd serves anything else.

use std::time::Duration;

use socket2::{Socket, TcpKeepalive};

use crate::error::{Error, ErrorKind, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// A socket option the C API's `SOCKSERV_OPT_*` name.
pub enum SockOpt {
    /// TCP_NODELAY, 0 or 1.
    NoDelay,
    /// SO_KEEPALIVE, 0 or 1.
    KeepAlive,
    /// TCP_KEEPIDLE: seconds of silence before the first probe.
    KeepAliveIdle,
    /// TCP_KEEPINTVL: seconds between probes.
    KeepAliveInterval,
    /// TCP_KEEPCNT: unanswered probes before the connection is dropped.
    KeepAliveCount,
    /// SO_RCVBUF in bytes (Linux reports twice what was set).
    RecvBuffer,
    /// SO_SNDBUF in bytes (Linux reports twice what was set).
    SendBuffer,
    /// SO_LINGER in seconds; -1 turns it off.
    Linger,
}

impl SockOpt {
    /// The option's C name, for error details.
    pub fn name(self) -> &'static str {
        match self {
            SockOpt::NoDelay => "TCP_NODELAY",
            SockOpt::KeepAlive => "SO_KEEPALIVE",
            SockOpt::KeepAliveIdle => "TCP_KEEPIDLE",
            SockOpt::KeepAliveInterval => "TCP_KEEPINTVL",
            SockOpt::KeepAliveCount => "TCP_KEEPCNT",
            SockOpt::RecvBuffer => "SO_RCVBUF",
            SockOpt::SendBuffer => "SO_SNDBUF",
            SockOpt::Linger => "SO_LINGER",
        }
    }
}

/// The options every stream connection gets, in both server modes, for
/// clients and adopted descriptors alike: TCP_NODELAY and SO_KEEPALIVE as
/// configured, on TCP sockets (Unix sockets have neither).
pub(crate) fn apply_stream(socket: &Socket, nodelay: bool, keepalive: bool) -> Result<()> {
    let local = socket
        .local_addr()
        .map_err(|e| Error::io("cannot read the socket's local address", &e))?;
    if local.is_ipv4() || local.is_ipv6() {
        set(socket, SockOpt::NoDelay, nodelay.into())?;
        set(socket, SockOpt::KeepAlive, keepalive.into())?;
    }
    Ok(())
}

fn invalid(opt: SockOpt, value: i64, range: &str) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("{} value {value} is out of range ({range})", opt.name()),
    )
}

fn flag(opt: SockOpt, value: i64) -> Result<bool> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(invalid(opt, value, "0 or 1")),
    }
}

fn seconds(opt: SockOpt, value: i64) -> Result<Duration> {
    u32::try_from(value)
        .ok()
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.into()))
        .ok_or_else(|| invalid(opt, value, "1 to 4294967295 seconds"))
}

fn bytes(opt: SockOpt, value: i64) -> Result<usize> {
    usize::try_from(value)
        .ok()
        .filter(|b| (1..=i32::MAX as usize).contains(b))
        .ok_or_else(|| invalid(opt, value, "1 to 2147483647 bytes"))
}

/// Sets `opt` to `value` on `socket`.
pub fn set(socket: &Socket, opt: SockOpt, value: i64) -> Result<()> {
    let done = match opt {
        SockOpt::NoDelay => socket.set_tcp_nodelay(flag(opt, value)?),
        SockOpt::KeepAlive => socket.set_keepalive(flag(opt, value)?),
        SockOpt::KeepAliveIdle => {
            socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(seconds(opt, value)?))
        }
        SockOpt::KeepAliveInterval => {
            socket.set_tcp_keepalive(&TcpKeepalive::new().with_interval(seconds(opt, value)?))
        }
        SockOpt::KeepAliveCount => {
            let count = u32::try_from(value)
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| invalid(opt, value, "1 to 4294967295"))?;
            socket.set_tcp_keepalive(&TcpKeepalive::new().with_retries(count))
        }
        SockOpt::RecvBuffer => socket.set_recv_buffer_size(bytes(opt, value)?),
        SockOpt::SendBuffer => socket.set_send_buffer_size(bytes(opt, value)?),
        SockOpt::Linger => {
            let linger = match value {
                -1 => None,
                s => Some(Duration::from_secs(
                    u32::try_from(s)
                        .map_err(|_| invalid(opt, value, "-1 (off) or 0 to 4294967295 seconds"))?
                        .into(),
                )),
            };
            socket.set_linger(linger)
        }
    };
    done.map_err(|e| Error::io(format_args!("setting {}", opt.name()), &e))
}

/// Reads `opt` from `socket`.
pub fn get(socket: &Socket, opt: SockOpt) -> Result<i64> {
    let value = match opt {
        SockOpt::NoDelay => socket.tcp_nodelay().map(i64::from),
        SockOpt::KeepAlive => socket.keepalive().map(i64::from),
        SockOpt::KeepAliveIdle => socket.tcp_keepalive_time().map(|d| d.as_secs() as i64),
        SockOpt::KeepAliveInterval => socket.tcp_keepalive_interval().map(|d| d.as_secs() as i64),
        SockOpt::KeepAliveCount => socket.tcp_keepalive_retries().map(i64::from),
        SockOpt::RecvBuffer => socket.recv_buffer_size().map(|b| b as i64),
        SockOpt::SendBuffer => socket.send_buffer_size().map(|b| b as i64),
        SockOpt::Linger => socket
            .linger()
            .map(|l| l.map_or(-1, |d| d.as_secs() as i64)),
    };
    value.map_err(|e| Error::io(format_args!("reading {}", opt.name()), &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Type};

    #[test]
    fn set_then_get_on_a_tcp_socket() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        for (opt, value) in [
            (SockOpt::NoDelay, 1),
            (SockOpt::KeepAlive, 1),
            (SockOpt::KeepAliveIdle, 30),
            (SockOpt::KeepAliveInterval, 7),
            (SockOpt::KeepAliveCount, 4),
            (SockOpt::Linger, 3),
            (SockOpt::Linger, -1),
        ] {
            set(&s, opt, value).unwrap();
            assert_eq!(get(&s, opt).unwrap(), value, "{opt:?}");
        }
        set(&s, SockOpt::RecvBuffer, 65536).unwrap();
        assert!(get(&s, SockOpt::RecvBuffer).unwrap() >= 65536);
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        for (opt, value) in [
            (SockOpt::NoDelay, 2),
            (SockOpt::KeepAliveIdle, 0),
            (SockOpt::KeepAliveCount, -3),
            (SockOpt::RecvBuffer, 0),
            (SockOpt::Linger, -2),
        ] {
            let e = set(&s, opt, value).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.detail().contains(opt.name()), "{e}");
        }
    }
}
