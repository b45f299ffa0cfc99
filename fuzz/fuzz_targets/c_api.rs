//! The C API driven by a byte-coded sequence of calls: configs created,
//! set and freed; connection pairs made with `sockserv_conn_from_fd` over a
//! socketpair (the handshake runs when the configs have keys: the two ends
//! on two threads); frames sent and received; raw bytes written under a
//! connection; addresses, timeouts, options, userdata, errors, HMAC; and
//! NULL wherever a pointer goes. No network: only socketpairs.
//!
//! Checked, beyond "no crash, no panic" (a panic aborts here even when the
//! API would catch it):
//! - every result is a known code, and outputs are left untouched on
//!   failure (the documented exceptions aside: the size needed);
//! - two ends are made iff the handshake can succeed: no key on either side,
//!   or the client's first key is one of the server's;
//! - frames arrive whole and in order: what one end sent successfully is
//!   what the other receives, until hostile raw bytes or a close
//!   intervene;
//! - no file descriptor is left open once everything is freed.
#![no_main]

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use libfuzzer_sys::fuzz_target;
use sockserv::ffi::*;

#[path = "hmac_key.rs"]
mod hmac_key;
#[path = "input.rs"]
mod input;
use hmac_key::same_hmac_key;
use input::Input;

const SENTINEL: usize = 0x5eb7_1ce1;

impl<'a> Input<'a> {
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn blob(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte());
        self.bytes(n)
    }
}

/// What the harness knows about a config it made.
#[derive(Clone, Default)]
struct ConfigModel {
    keys: Vec<Vec<u8>>,
}

/// One end of a pair, and what the other end sent it that it has not
/// received yet (`None`: the stream no longer follows the model).
struct End {
    conn: *mut sockserv_conn,
    expect: Option<VecDeque<Vec<u8>>>,
}

struct State {
    configs: [*mut sockserv_config; 2],
    models: [ConfigModel; 2],
    ends: [Option<End>; 2],
}

fn known(rc: sockserv_result) -> sockserv_result {
    // The enum is repr(C): a value outside it would be UB already, but a
    // bad mapping would show as an out-of-range integer here.
    let code = rc as i32;
    assert!((0..=19).contains(&code), "unknown result {code}");
    rc
}

fn ok(rc: sockserv_result) -> bool {
    known(rc) == sockserv_result::SOCKSERV_OK
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

impl State {
    fn config(&self, i: u8) -> *mut sockserv_config {
        // Index 2 and 3 give NULL.
        match i % 4 {
            0 | 1 => self.configs[usize::from(i % 2)],
            _ => ptr::null_mut(),
        }
    }

    fn conn(&self, i: u8) -> *mut sockserv_conn {
        match i % 3 {
            0 | 1 => self.ends[usize::from(i % 3)]
                .as_ref()
                .map_or(ptr::null_mut(), |e| e.conn),
            _ => ptr::null_mut(),
        }
    }

    fn free_ends(&mut self) {
        for end in self.ends.iter_mut() {
            if let Some(end) = end.take() {
                // SAFETY: made by sockserv_conn_from_fd, freed once.
                unsafe { sockserv_conn_free(end.conn) };
            }
        }
    }

    /// Both ends' models stop: the stream is out of the model's hands.
    fn forget_streams(&mut self) {
        for end in self.ends.iter_mut().flatten() {
            end.expect = None;
        }
    }

    /// A socketpair, its ends adopted by from_fd as server (config a) and
    /// client (config b) on two threads, as a handshake needs.
    fn make_pair(&mut self, a: u8, b: u8) {
        self.free_ends();
        let mut fds = [0 as c_int; 2];
        // SAFETY: socketpair writes two descriptors into `fds`.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0);
        let (ca, cb) = (self.config(a), self.config(b));
        let keys_a = (!ca.is_null()).then(|| self.models[usize::from(a % 2)].keys.clone());
        let keys_b = (!cb.is_null()).then(|| self.models[usize::from(b % 2)].keys.clone());
        let (ca_addr, cb_addr) = (ca as usize, cb as usize);
        let fd1 = fds[1];
        let client = std::thread::spawn(move || {
            let mut conn: *mut sockserv_conn = SENTINEL as *mut _;
            // SAFETY: the config is live (the main thread waits for us
            // before it could free it), or NULL.
            let rc = unsafe {
                sockserv_conn_from_fd(fd1, cb_addr as *const _, SOCKSERV_ROLE_CLIENT, &mut conn)
            };
            (known(rc), conn as usize)
        });
        let mut server: *mut sockserv_conn = SENTINEL as *mut _;
        // SAFETY: as above.
        let rc_a = known(unsafe {
            sockserv_conn_from_fd(
                fds[0],
                ca_addr as *const _,
                SOCKSERV_ROLE_SERVER,
                &mut server,
            )
        });
        if rc_a != sockserv_result::SOCKSERV_OK {
            // The peer may wait for our handshake messages: closing our end
            // (ours again on failure) ends its wait.
            // SAFETY: on failure the fd is still ours.
            unsafe { libc::close(fds[0]) };
        }
        let (rc_b, client) = client.join().expect("client thread");
        let client = client as *mut sockserv_conn;
        if rc_b != sockserv_result::SOCKSERV_OK {
            assert_eq!(client as usize, SENTINEL, "output written on failure");
            // SAFETY: as above.
            unsafe { libc::close(fd1) };
        }
        if rc_a != sockserv_result::SOCKSERV_OK {
            assert_eq!(server as usize, SENTINEL, "output written on failure");
        }
        // The handshake runs iff a side has a key; it can only succeed if
        // both have keys and the client's first is among the server's.
        let ka = keys_a.unwrap_or_default();
        let kb = keys_b.unwrap_or_default();
        let expected = match (ka.is_empty(), kb.is_empty()) {
            (true, true) => true,
            (false, false) => ka.iter().any(|k| same_hmac_key(k, &kb[0])),
            _ => false,
        };
        let both = rc_a == sockserv_result::SOCKSERV_OK && rc_b == sockserv_result::SOCKSERV_OK;
        // Both directions. Keys that do not match: never a pair.
        assert!(
            expected || !both,
            "a handshake succeeded with keys that do not match"
        );
        // Keys that match: a pair, unless a side ran out of its (fuzzed,
        // as short as 1 ms) handshake timeout and the other saw it go.
        // An authentication failure, or a failure with no timeout on
        // either side, is a finding.
        if expected && !both {
            use sockserv_result::*;
            let timed_out = [rc_a, rc_b].contains(&SOCKSERV_ERR_TIMED_OUT);
            let peer_gone = |rc: sockserv_result| {
                matches!(
                    rc,
                    SOCKSERV_OK
                        | SOCKSERV_ERR_TIMED_OUT
                        | SOCKSERV_ERR_CLOSED
                        | SOCKSERV_ERR_TRUNCATED_FRAME
                        | SOCKSERV_ERR_BROKEN
                        | SOCKSERV_ERR_IO
                )
            };
            assert!(
                timed_out && peer_gone(rc_a) && peer_gone(rc_b),
                "keys that match made no pair: server {rc_a:?}, client {rc_b:?}"
            );
        }
        if rc_a == sockserv_result::SOCKSERV_OK {
            self.ends[0] = Some(End {
                conn: server,
                expect: Some(VecDeque::new()),
            });
        }
        if rc_b == sockserv_result::SOCKSERV_OK {
            self.ends[1] = Some(End {
                conn: client,
                expect: Some(VecDeque::new()),
            });
        }
        for end in self.ends.iter().flatten() {
            // Short timeouts, so a receive with nothing to get costs little.
            // SAFETY: a live connection.
            assert!(ok(unsafe { sockserv_conn_set_timeout_ms(end.conn, 2) }));
        }
        if !both {
            // One end alone talks to a closed peer: nothing to model.
            self.forget_streams();
        }
    }

    /// A frame `at` received: it must be the next one the model expects.
    fn received(&mut self, at: usize, frame: &[u8]) {
        if let Some(end) = self.ends.get_mut(at).and_then(|e| e.as_mut()) {
            if let Some(expect) = end.expect.as_mut() {
                match expect.pop_front() {
                    Some(next) => assert!(next == frame, "a frame arrived changed or out of order"),
                    None => panic!("a frame arrived that nobody sent"),
                }
            }
        }
    }

    fn sent(&mut self, at: usize, frame: &[u8]) {
        if at > 1 {
            return;
        }
        if let Some(Some(expect)) = self.ends[1 - at].as_mut().map(|e| e.expect.as_mut()) {
            expect.push_back(frame.to_vec());
        }
    }

    fn step(&mut self, input: &mut Input) {
        let op = input.byte();
        let arg = input.byte();
        match op % 22 {
            0 => {
                let i = usize::from(arg % 2);
                // SAFETY: NULL or a config of ours, freed once.
                unsafe { sockserv_config_free(self.configs[i]) };
                self.configs[i] = ptr::null_mut();
                let mut c: *mut sockserv_config = ptr::null_mut();
                // SAFETY: a valid out-pointer.
                assert!(ok(unsafe { sockserv_config_new(&mut c) }));
                assert!(!c.is_null());
                self.configs[i] = c;
                self.models[i] = ConfigModel::default();
                // SAFETY: a live config; the handshake timeout is kept
                // short so a failing handshake costs little.
                assert!(ok(unsafe {
                    sockserv_config_set_handshake_timeout_ms(c, 20)
                }));
            }
            1 => {
                let i = usize::from(arg % 2);
                // SAFETY: NULL or a config of ours, freed once.
                unsafe { sockserv_config_free(self.configs[i]) };
                self.configs[i] = ptr::null_mut();
                self.models[i] = ConfigModel::default();
                // SAFETY: NULL is documented as a no-op.
                unsafe { sockserv_config_free(ptr::null_mut()) };
            }
            2 | 3 => {
                let c = self.config(arg);
                let key = input.blob();
                let key_ptr = if arg & 0x10 != 0 {
                    ptr::null()
                } else {
                    key.as_ptr()
                };
                // SAFETY: NULL or a live config; key_ptr has key.len() bytes or is NULL.
                let rc = known(unsafe {
                    if op % 22 == 2 {
                        sockserv_config_set_auth_key(c, key_ptr, key.len())
                    } else {
                        sockserv_config_add_auth_key(c, key_ptr, key.len())
                    }
                });
                let accepted = !c.is_null() && !key.is_empty() && !key_ptr.is_null();
                assert_eq!(rc == sockserv_result::SOCKSERV_OK, accepted, "{rc:?}");
                if accepted {
                    let model = &mut self.models[usize::from(arg % 2)];
                    if op % 22 == 2 {
                        model.keys.clear();
                    }
                    model.keys.push(key.to_vec());
                }
            }
            4 => {
                let c = self.config(arg);
                // SAFETY: NULL or a live config.
                let rc = known(unsafe { sockserv_config_clear_auth_keys(c) });
                assert_eq!(rc == sockserv_result::SOCKSERV_OK, !c.is_null());
                if !c.is_null() {
                    self.models[usize::from(arg % 2)].keys.clear();
                }
            }
            5 => {
                let c = self.config(arg);
                let size = u64::from(input.u32()) << (input.byte() % 40);
                // SAFETY: NULL or a live config.
                known(unsafe { sockserv_config_set_max_frame_size(c, size) });
            }
            6 => {
                let c = self.config(arg);
                // Kept short: every failing handshake waits for it.
                let ms = u32::from(input.byte() % 30);
                // SAFETY: NULL or a live config.
                let rc = known(unsafe { sockserv_config_set_handshake_timeout_ms(c, ms) });
                assert_eq!(rc == sockserv_result::SOCKSERV_OK, !c.is_null() && ms > 0);
            }
            7 => {
                let c = self.config(arg);
                let v = input.u32();
                // SAFETY: NULL or a live config; none of these touch the
                // network or wait.
                unsafe {
                    known(sockserv_config_set_io_timeout_ms(c, v % 20));
                    known(sockserv_config_set_connect_timeout_ms(c, v));
                    known(sockserv_config_set_max_connections(c, v as usize));
                    known(sockserv_config_set_when_full(c, v as c_int % 3));
                    known(sockserv_config_set_backlog(c, v as c_int));
                    known(sockserv_config_set_reuse_address(c, v & 1 != 0));
                    known(sockserv_config_set_reuse_port(c, v & 2 != 0));
                    known(sockserv_config_set_nodelay(c, v & 4 != 0));
                    known(sockserv_config_set_keepalive(c, v & 8 != 0));
                    known(sockserv_config_set_io_threads(c, (v % 4) as usize));
                    known(sockserv_config_set_max_queued_bytes(c, v as usize));
                    known(sockserv_config_set_close_when_backed_up(c, v & 16 != 0));
                    known(sockserv_config_set_idle_timeout_ms(c, v));
                }
            }
            8 | 9 => self.make_pair(arg, arg >> 2),
            10 | 11 => {
                let at = usize::from(arg % 3);
                let c = self.conn(arg);
                let data = input.blob();
                let data_ptr = if arg & 0x10 != 0 && data.is_empty() {
                    ptr::null()
                } else {
                    data.as_ptr()
                };
                // SAFETY: NULL or a live connection; data_ptr has data.len() bytes.
                let rc = known(unsafe { sockserv_conn_send(c, data_ptr, data.len()) });
                if c.is_null() {
                    assert_eq!(rc, sockserv_result::SOCKSERV_ERR_NULL_PARAMETER);
                } else if rc == sockserv_result::SOCKSERV_OK {
                    self.sent(at, data);
                } else {
                    // A send that failed may have left part of a frame.
                    self.forget_streams();
                }
            }
            12 => {
                let at = usize::from(arg % 3);
                let c = self.conn(arg);
                let mut data: *const u8 = SENTINEL as *const u8;
                let mut len: usize = SENTINEL;
                let (dp, lp) = (
                    if arg & 0x10 != 0 {
                        ptr::null_mut()
                    } else {
                        &mut data as *mut _
                    },
                    if arg & 0x20 != 0 {
                        ptr::null_mut()
                    } else {
                        &mut len as *mut _
                    },
                );
                // SAFETY: NULL or a live connection and valid out-pointers.
                let rc = known(unsafe { sockserv_conn_recv(c, dp, lp) });
                if rc == sockserv_result::SOCKSERV_OK {
                    assert!(!data.is_null() && data as usize != SENTINEL);
                    // SAFETY: the API lends `len` bytes at `data` until the
                    // next receive on this connection.
                    let frame = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
                    self.received(at, &frame);
                } else {
                    assert_eq!(
                        (data as usize, len),
                        (SENTINEL, SENTINEL),
                        "outputs written on failure"
                    );
                    self.after_failed_recv(at, rc);
                }
            }
            13 => {
                let at = usize::from(arg % 3);
                let c = self.conn(arg);
                let cap = usize::from(input.byte());
                let mut buf = vec![0xaau8; cap];
                let bp = if arg & 0x10 != 0 {
                    ptr::null_mut()
                } else {
                    buf.as_mut_ptr()
                };
                let mut len: usize = SENTINEL;
                let lp = if arg & 0x20 != 0 {
                    ptr::null_mut()
                } else {
                    &mut len as *mut _
                };
                // SAFETY: NULL or a live connection; bp has cap bytes or is NULL.
                let rc = known(unsafe { sockserv_conn_recv_into(c, bp, cap, lp) });
                match rc {
                    sockserv_result::SOCKSERV_OK => {
                        assert!(len <= cap);
                        self.received(at, &buf[..len]);
                    }
                    sockserv_result::SOCKSERV_ERR_INSUFFICIENT_SIZE => {
                        // The size needed is written and the frame stays.
                        assert!(len > cap && len != SENTINEL);
                    }
                    _ => {
                        assert_eq!(len, SENTINEL, "output written on failure");
                        self.after_failed_recv(at, rc);
                    }
                }
            }
            14 => {
                let c = self.conn(arg);
                let mut readable = false;
                let rp = if arg & 0x10 != 0 {
                    ptr::null_mut()
                } else {
                    &mut readable as *mut _
                };
                // SAFETY: NULL or a live connection; timeout 0: no wait.
                known(unsafe { sockserv_conn_poll(c, 0, rp) });
            }
            15 => {
                let c = self.conn(arg);
                // SAFETY: NULL or a live connection.
                let rc = known(unsafe { sockserv_conn_close(c) });
                if rc == sockserv_result::SOCKSERV_OK {
                    self.forget_streams();
                }
            }
            16 => {
                let i = usize::from(arg % 2);
                if let Some(end) = self.ends[i].take() {
                    // SAFETY: made by from_fd, freed once.
                    unsafe { sockserv_conn_free(end.conn) };
                    self.forget_streams();
                }
                // SAFETY: NULL is a documented no-op.
                unsafe { sockserv_conn_free(ptr::null_mut()) };
            }
            17 => {
                // Hostile bytes written under a connection, to its peer.
                let c = self.conn(arg);
                let mut fd: c_int = -7;
                // SAFETY: NULL or a live connection; valid out-pointer.
                let rc = known(unsafe { sockserv_conn_fd(c, &mut fd) });
                if rc == sockserv_result::SOCKSERV_OK {
                    let bytes = input.blob();
                    // SAFETY: fd belongs to a live connection; the bytes are
                    // valid; MSG_DONTWAIT so a full socket does not block us.
                    unsafe {
                        libc::send(
                            fd,
                            bytes.as_ptr().cast(),
                            bytes.len(),
                            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                        )
                    };
                    self.forget_streams();
                } else {
                    assert_eq!(fd, -7);
                }
            }
            18 => {
                let c = self.conn(arg);
                let v = input.u32();
                let mut t: u32 = 7;
                let mut on = false;
                // SAFETY: NULL or a live connection; valid out-pointers or
                // NULL. A timeout of 0 (for ever) is not set: recv would
                // wait for ever.
                unsafe {
                    known(sockserv_conn_set_timeout_ms(c, v % 20 + 1));
                    known(sockserv_conn_get_timeout_ms(
                        c,
                        if arg & 0x10 != 0 {
                            ptr::null_mut()
                        } else {
                            &mut t
                        },
                    ));
                    known(sockserv_conn_set_nodelay(c, v & 1 != 0));
                    known(sockserv_conn_get_nodelay(
                        c,
                        if arg & 0x20 != 0 {
                            ptr::null_mut()
                        } else {
                            &mut on
                        },
                    ));
                    known(sockserv_conn_set_keepalive(
                        c,
                        v & 2 != 0,
                        v >> 8,
                        v >> 16,
                        v >> 24,
                    ));
                    let ud = v as usize as *mut c_void;
                    known(sockserv_conn_set_userdata(c, ud));
                    let back = sockserv_conn_get_userdata(c);
                    if !c.is_null() {
                        assert_eq!(back, ud);
                    } else {
                        assert!(back.is_null());
                    }
                }
            }
            19 => {
                let c = self.conn(arg);
                let len = usize::from(input.byte() % 140);
                let mut buf = vec![0x55 as c_char; len];
                let bp = if arg & 0x10 != 0 {
                    ptr::null_mut()
                } else {
                    buf.as_mut_ptr()
                };
                let mut needed = SENTINEL;
                let np = if arg & 0x20 != 0 {
                    ptr::null_mut()
                } else {
                    &mut needed as *mut _
                };
                // SAFETY: NULL or a live connection; bp has len bytes or is NULL.
                let rc = known(unsafe {
                    if arg & 0x40 != 0 {
                        sockserv_conn_peer_addr(c, bp, len, np)
                    } else {
                        sockserv_conn_local_addr(c, bp, len, np)
                    }
                });
                if rc == sockserv_result::SOCKSERV_OK {
                    assert!(needed >= 1 && needed <= len);
                    assert_eq!(buf[needed - 1], 0, "not NUL-terminated");
                }
            }
            20 => {
                let code = input.u32() as c_int;
                // SAFETY: any code is accepted; the result is static.
                let text = unsafe { std::ffi::CStr::from_ptr(sockserv_strerror(code)) };
                assert!(!text.to_bytes().is_empty());
                let len = usize::from(arg);
                let mut buf = vec![0x55 as c_char; len];
                let bp = if arg & 1 != 0 && len == 0 {
                    ptr::null_mut()
                } else {
                    buf.as_mut_ptr()
                };
                // SAFETY: bp has len bytes, or is NULL with len 0.
                let full = unsafe { sockserv_last_error(bp, len) };
                if len > 0 {
                    assert_eq!(buf[full.min(len - 1)], 0);
                }
                if arg & 2 != 0 {
                    sockserv_clear_error();
                }
            }
            _ => {
                let key = input.blob();
                let msg = input.blob();
                let mut mac = [0u8; 32];
                // SAFETY: slices and a 32-byte output.
                unsafe {
                    assert!(ok(sockserv_hmac_sha256(
                        key.as_ptr(),
                        key.len(),
                        msg.as_ptr(),
                        msg.len(),
                        mac.as_mut_ptr()
                    )));
                    assert!(ok(sockserv_hmac_sha256_verify(
                        key.as_ptr(),
                        key.len(),
                        msg.as_ptr(),
                        msg.len(),
                        mac.as_ptr(),
                        32
                    )));
                    let cut = usize::from(arg % 33);
                    let rc = sockserv_hmac_sha256_verify(
                        key.as_ptr(),
                        key.len(),
                        msg.as_ptr(),
                        msg.len(),
                        mac.as_ptr(),
                        cut,
                    );
                    assert_eq!(rc == sockserv_result::SOCKSERV_OK, cut == 32);
                    mac[usize::from(arg) % 32] ^= 1;
                    assert_eq!(
                        known(sockserv_hmac_sha256_verify(
                            key.as_ptr(),
                            key.len(),
                            msg.as_ptr(),
                            msg.len(),
                            mac.as_ptr(),
                            32
                        )),
                        sockserv_result::SOCKSERV_ERR_AUTH_FAILED
                    );
                    assert_eq!(
                        known(sockserv_hmac_sha256(
                            key.as_ptr(),
                            key.len(),
                            msg.as_ptr(),
                            msg.len(),
                            ptr::null_mut()
                        )),
                        sockserv_result::SOCKSERV_ERR_NULL_PARAMETER
                    );
                }
            }
        }
    }

    /// A receive failed: a timeout keeps the stream; anything else means
    /// it can no longer be followed.
    fn after_failed_recv(&mut self, at: usize, rc: sockserv_result) {
        match rc {
            // Checked before anything is read: nothing changed.
            sockserv_result::SOCKSERV_ERR_NULL_PARAMETER => {}
            sockserv_result::SOCKSERV_ERR_TIMED_OUT => {
                // A send on a socketpair puts the whole frame in the peer's
                // receive queue before it returns: a frame the model
                // expects would have been found.
                if let Some(Some(expect)) = self
                    .ends
                    .get(at)
                    .map(|e| e.as_ref().and_then(|e| e.expect.as_ref()))
                {
                    assert!(expect.is_empty(), "a frame sent whole never arrived");
                }
            }
            _ => self.forget_streams(),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let fds_before = open_fds();
    let mut input = Input(data);
    let mut state = State {
        configs: [ptr::null_mut(); 2],
        models: Default::default(),
        ends: [None, None],
    };
    // Bounded: at most 64 calls per input.
    for _ in 0..64 {
        if input.0.is_empty() {
            break;
        }
        state.step(&mut input);
    }
    state.free_ends();
    for c in state.configs {
        // SAFETY: NULL or a config of ours, freed once.
        unsafe { sockserv_config_free(c) };
    }
    assert_eq!(open_fds(), fds_before, "a file descriptor was left open");
});
