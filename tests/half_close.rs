//! A client that half-closes (shutdown(SHUT_WR)) after its requests still
//! gets every reply: each frame received is delivered, each reply queued is
//! written before the close, and no frame is torn (issue 10, finding 1).

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::*;

const FRAMES: usize = 120;
const FRAME_SIZE: usize = 64 * 1024;

fn every_reply_arrives_after_a_half_close(mode: Mode) {
    let config = config_with_key(KEY);
    let (server, errors) = recording_echo_server(&config, mode);
    let mut stream = authenticated_raw(&server, &config);
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // Send everything and half-close before reading a reply (as the report
    // did), on a thread of its own in case the socket buffers cannot hold
    // it all: then reading starts after 5 s and unblocks it.
    let sent = std::thread::spawn(move || {
        let mut frame = Vec::with_capacity(4 + FRAME_SIZE);
        for i in 0..FRAMES {
            frame.clear();
            frame.extend_from_slice(&(FRAME_SIZE as u32).to_be_bytes());
            frame.extend((0..FRAME_SIZE).map(|j| (i + j) as u8));
            writer.write_all(&frame).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
        let _ = done_tx.send(());
    });
    let _ = done_rx.recv_timeout(Duration::from_secs(5));
    let mut all = Vec::new();
    stream
        .read_to_end(&mut all)
        .expect("the server closes cleanly");
    sent.join().unwrap();
    // Whole frames only, all of them, in order.
    let mut whole = 0;
    let mut at = 0;
    while at + 4 <= all.len() {
        let len = u32::from_be_bytes(all[at..at + 4].try_into().unwrap()) as usize;
        assert_eq!(len, FRAME_SIZE, "{mode:?}: reply {whole} has length {len}");
        if at + 4 + len > all.len() {
            break;
        }
        let payload = &all[at + 4..at + 4 + len];
        assert!(
            payload
                .iter()
                .enumerate()
                .all(|(j, b)| *b == (whole + j) as u8),
            "{mode:?}: reply {whole} is not request {whole}"
        );
        whole += 1;
        at += 4 + len;
    }
    assert_eq!(
        (whole, all.len() - at),
        (FRAMES, 0),
        "{mode:?}: {whole} whole replies of {FRAMES} and {} bytes of a torn one",
        all.len() - at
    );
    // The server saw a clean end of stream.
    assert!(wait_until(Duration::from_secs(5), || !errors
        .lock()
        .unwrap()
        .is_empty()));
    let e = errors.lock().unwrap()[0].clone();
    assert_eq!(e.kind(), sockserv::ErrorKind::Closed, "{e}");
}

#[test]
fn threaded_every_reply_arrives_after_a_half_close() {
    every_reply_arrives_after_a_half_close(Mode::Threaded);
}

#[test]
fn event_every_reply_arrives_after_a_half_close() {
    every_reply_arrives_after_a_half_close(Mode::Event);
}
