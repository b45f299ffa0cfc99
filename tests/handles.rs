//! Connection handles that outlive their connection (issue 10, finding 7):
//! `sockserv_conn_retain` / `sockserv_conn_release` through the C ABI, in
//! both modes, and the Rust `EventConn` kept past `on_close`. A send from
//! another thread after the peer left returns `SOCKSERV_ERR_CLOSED`
//! (before, the C handle was freed when `on_close` returned: a
//! use-after-free). The C stress test is tests/c/handles.c.

use std::ffi::{c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sockserv::ffi::*;
use sockserv::{connect, Config, Error, ErrorKind, EventConn, EventHandler, Server};

/// The handle a callback retained (as an address), and how many
/// connections closed. One test at a time uses them.
static HELD: AtomicUsize = AtomicUsize::new(0);
static CLOSED: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

const OK: sockserv_result = sockserv_result::SOCKSERV_OK;
const CLOSED_RC: sockserv_result = sockserv_result::SOCKSERV_ERR_CLOSED;

unsafe extern "C" fn keep(_: *mut c_void, conn: *mut sockserv_conn, _: *const u8, _: usize) {
    // SAFETY: a handle lent to this callback.
    assert_eq!(unsafe { sockserv_conn_retain(conn) }, OK);
    HELD.store(conn as usize, Ordering::SeqCst);
}

unsafe extern "C" fn closed(_: *mut c_void, _: *mut sockserv_conn, _: sockserv_result) {
    CLOSED.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn keep_and_return(_: *mut c_void, conn: *mut sockserv_conn) {
    let mut data = ptr::null();
    let mut len = 0;
    // SAFETY: a handle lent to this handler, valid out-pointers.
    if unsafe { sockserv_conn_recv(conn, &mut data, &mut len) } == OK {
        // SAFETY: as above.
        unsafe { keep(ptr::null_mut(), conn, data, len) };
    }
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A started server with the event callbacks or the threaded handler, and
/// its address.
fn server(event: bool) -> (*mut sockserv_server, String) {
    let addr = CString::new("tcp://127.0.0.1:0").unwrap();
    let mut srv: *mut sockserv_server = ptr::null_mut();
    // SAFETY: valid arguments; NULL config gives the defaults.
    unsafe {
        assert_eq!(
            sockserv_server_new(addr.as_ptr(), ptr::null(), &mut srv),
            OK
        );
        let rc = if event {
            sockserv_server_set_event_handlers(srv, None, Some(keep), Some(closed), ptr::null_mut())
        } else {
            sockserv_server_set_handler(srv, Some(keep_and_return), ptr::null_mut())
        };
        assert_eq!(rc, OK);
        assert_eq!(sockserv_server_start(srv), OK);
    }
    let mut buf = [0u8; 128];
    let mut needed = 0usize;
    // SAFETY: a live server and a buffer of its stated length.
    unsafe { sockserv_server_local_addr(srv, buf.as_mut_ptr().cast(), buf.len(), &mut needed) };
    let bound = CStr::from_bytes_until_nul(&buf).unwrap().to_str().unwrap();
    (srv, bound.to_string())
}

/// A send from a worker thread through `handle` (an address, to cross
/// threads).
fn send_from_worker(handle: usize) -> sockserv_result {
    std::thread::spawn(move || {
        // SAFETY: a retained handle: valid memory until released.
        unsafe { sockserv_conn_send(handle as *const sockserv_conn, b"late".as_ptr(), 4) }
    })
    .join()
    .unwrap()
}

fn run(event: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    HELD.store(0, Ordering::SeqCst);
    CLOSED.store(0, Ordering::SeqCst);
    let (srv, addr) = server(event);
    let client = connect(&addr, &Config::default()).unwrap();
    client.set_timeout(Some(Duration::from_secs(10)));
    client.send(b"work").unwrap();
    wait_for("the callback to retain the handle", || {
        HELD.load(Ordering::SeqCst) != 0
    });
    let held = HELD.load(Ordering::SeqCst);
    if event {
        // Live: the worker's reply reaches the peer.
        assert_eq!(send_from_worker(held), OK);
        assert_eq!(client.recv_with(|f| f.to_vec()).unwrap(), b"late");
        drop(client);
        wait_for("on_close", || CLOSED.load(Ordering::SeqCst) == 1);
    } else {
        // The handler returned: the peer sees the end though the handle is held.
        let end = client.recv_with(|f| f.to_vec()).unwrap_err();
        assert_eq!(end.kind(), ErrorKind::Closed, "{end}");
    }
    // The pattern that was a use-after-free: send after the end, from
    // another thread.
    assert_eq!(send_from_worker(held), CLOSED_RC);
    let conn = held as *mut sockserv_conn;
    let mut fd = -1;
    // SAFETY: a retained handle and valid out-pointers.
    unsafe {
        assert_eq!(sockserv_conn_fd(conn, &mut fd), CLOSED_RC);
        assert_eq!(sockserv_conn_close(conn), CLOSED_RC);
        assert_eq!(sockserv_conn_set_nodelay(conn, true), CLOSED_RC);
        let mut buf = [0u8; 128];
        let mut needed = 0;
        assert_eq!(
            sockserv_conn_peer_addr(conn, buf.as_mut_ptr().cast(), buf.len(), &mut needed),
            OK
        );
        // The server goes before the last reference.
        sockserv_server_free(srv);
        assert_eq!(sockserv_conn_send(conn, b"x".as_ptr(), 1), CLOSED_RC);
        sockserv_conn_release(conn);
    }
}

#[test]
fn event_mode_send_after_on_close_from_a_worker_is_closed() {
    run(true);
}

#[test]
fn threaded_mode_send_after_the_handler_returned_is_closed() {
    run(false);
}

#[test]
fn client_connection_retained_past_free() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    HELD.store(0, Ordering::SeqCst);
    let (srv, addr) = server(true);
    let addr = CString::new(addr).unwrap();
    let mut conn: *mut sockserv_conn = ptr::null_mut();
    // SAFETY: valid arguments; each reference is given back once.
    unsafe {
        assert_eq!(sockserv_connect(addr.as_ptr(), ptr::null(), &mut conn), OK);
        assert_eq!(sockserv_conn_retain(conn), OK);
        assert_eq!(sockserv_conn_send(conn, b"x".as_ptr(), 1), OK);
        sockserv_conn_free(conn);
        assert_eq!(sockserv_conn_send(conn, b"x".as_ptr(), 1), CLOSED_RC);
        sockserv_conn_release(conn);
        assert_eq!(
            sockserv_conn_retain(ptr::null()),
            sockserv_result::SOCKSERV_ERR_NULL_PARAMETER
        );
        sockserv_conn_release(ptr::null_mut());
        sockserv_server_free(srv);
        // The event callback retained the server's handle for "x".
        let held = HELD.swap(0, Ordering::SeqCst);
        if held != 0 {
            sockserv_conn_release(held as *mut sockserv_conn);
        }
    }
}

/// The Rust API: an `EventConn` kept past `on_close` refuses sends and
/// keeps no queue.
#[test]
fn rust_event_conn_kept_past_on_close_refuses_sends() {
    struct Keep(Mutex<Option<Arc<EventConn>>>, AtomicUsize);
    impl EventHandler for Keep {
        fn on_open(&self, conn: &Arc<EventConn>) {
            *self.0.lock().unwrap() = Some(conn.clone());
        }
        fn on_frame(&self, conn: &Arc<EventConn>, frame: &[u8]) {
            conn.send(frame).unwrap();
        }
        fn on_close(&self, conn: &Arc<EventConn>, _: Option<&Error>) {
            assert_eq!(conn.send(b"x").unwrap_err().kind(), ErrorKind::Closed);
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }
    let keep = Arc::new(Keep(Mutex::new(None), AtomicUsize::new(0)));
    let server = Server::bind("tcp://127.0.0.1:0", &Config::default()).unwrap();
    server.set_event_handler(keep.clone()).unwrap();
    server.start().unwrap();
    let client = connect(server.local_addr(), &Config::default()).unwrap();
    client.send(b"hi").unwrap();
    assert_eq!(client.recv_with(|f| f.to_vec()).unwrap(), b"hi");
    drop(client);
    wait_for("on_close", || keep.1.load(Ordering::SeqCst) == 1);
    let conn = keep.0.lock().unwrap().take().unwrap();
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let conn = conn.clone();
            std::thread::spawn(move || {
                (0..1000)
                    .filter(|_| conn.send(&[7; 100]).unwrap_err().kind() == ErrorKind::Closed)
                    .count()
            })
        })
        .collect();
    for s in senders {
        assert_eq!(s.join().unwrap(), 1000);
    }
    assert!(conn.is_closed());
    assert_eq!(conn.queued_bytes(), 0);
}
