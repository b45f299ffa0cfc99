//! The few system calls that neither std nor socket2 offer safely: poll(2)
//! with a deadline, recv(2) and recvfrom(2) with flags into an initialised
//! buffer, and taking ownership of an inherited descriptor.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// Whether `thread` is the calling thread. Unlike `thread::current()`, this
/// allocates nothing: called from a thread Rust did not start (a C program's
/// main thread freeing a server), `thread::current()` creates a handle that
/// lives in thread-local storage until exit, which valgrind reports as
/// "possibly lost".
pub fn is_current_thread<T>(thread: &std::thread::JoinHandle<T>) -> bool {
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: pthread_self has no preconditions and always succeeds. The
    // handle's pthread_t stays valid (and unreused) until it is joined or
    // dropped, and `thread` borrows it for this comparison.
    thread.as_pthread_t() == unsafe { libc::pthread_self() }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    Read,
    Write,
}

/// Waits until `fd` is ready for `interest` (or has an error or hang-up,
/// which the next call on it will report) or `deadline` passes. Returns
/// whether it became ready. `None` waits for ever.
pub fn wait(fd: RawFd, interest: Interest, deadline: Option<Instant>) -> io::Result<bool> {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let mut pfd = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    Ok(poll_until(&mut pfd, deadline)? > 0)
}

/// Waits until one of `fds` is readable or `deadline` passes; `ready[i]`
/// tells whether `fds[i]` is. At most 4 descriptors.
pub fn wait_readable(fds: &[RawFd], deadline: Option<Instant>) -> io::Result<[bool; 4]> {
    assert!(fds.len() <= 4, "wait_readable takes at most 4 descriptors");
    // On the stack: servers call this once per wake-up.
    let unused = libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    };
    let mut pfds = [unused; 4];
    for (p, &fd) in pfds.iter_mut().zip(fds) {
        p.fd = fd;
        p.events = libc::POLLIN;
    }
    let pfds = &mut pfds[..fds.len()];
    poll_until(pfds, deadline)?;
    let mut ready = [false; 4];
    for (r, p) in ready.iter_mut().zip(pfds.iter()) {
        *r = p.revents != 0;
    }
    Ok(ready)
}

/// poll(2) until something is ready or the deadline passes, retrying EINTR.
fn poll_until(pfds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let timeout_ms = match deadline {
            None => -1,
            // Round up so a wait never ends just before its deadline.
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_micros()
                .div_ceil(1000)
                .min(i32::MAX as u128) as i32,
        };
        // SAFETY: `pfds` is a valid, writable slice of pollfd and we pass its
        // exact length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if n > 0 {
            return Ok(n as usize);
        }
        if n == 0 {
            if timeout_ms == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(0);
            }
            continue;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// recv(2) into `buf` with `flags` (MSG_DONTWAIT for a deadline).
pub fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable, initialised region of `buf.len()`
    // bytes for the duration of the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// recvfrom(2) into `buf` with `flags`, returning the byte count and the
/// sender. With MSG_TRUNC the count is the datagram's real length, also when
/// it was longer than `buf` (the rest is discarded by the kernel).
pub fn recv_from(
    fd: RawFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, socket2::SockAddr)> {
    // SAFETY: try_init hands us zeroed storage and its length to fill, as
    // recvfrom does; `buf` is a valid, writable, initialised region of
    // `buf.len()` bytes for the duration of the call.
    unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let n = libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
                storage.cast(),
                len,
            );
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
    }
}

/// Takes ownership of an inherited descriptor (`fd://N`, systemd), after
/// checking that it is open. It is closed when the socket drops.
pub fn adopt_fd(fd: RawFd) -> io::Result<socket2::Socket> {
    // SAFETY: fcntl(F_GETFD) reads the descriptor's flags and touches no
    // memory; EBADF tells us the descriptor is not open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open, and the caller hands it over (the
    // documented contract of fd:// and systemd:// addresses: each is used
    // once), so this socket is its only owner.
    Ok(unsafe { <socket2::Socket as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}
