//! Framed echo over every stream transport, with and without a key.

mod common;

use common::*;
use sockserv::{connect, Config};

fn exchange(addr: &str, config: &Config) {
    let server = echo_server(addr, config);
    let client = connect(server.local_addr(), config).unwrap();
    for size in [0, 1, 100, 65_536, 1 << 20] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        roundtrip(&client, &payload);
    }
}

#[test]
fn tcp_v4_plain_and_authenticated() {
    exchange("tcp://127.0.0.1:0", &Config::default());
    exchange("tcp://127.0.0.1:0", &config_with_key(KEY));
}

#[test]
fn tcp_v6_authenticated() {
    exchange("tcp://[::1]:0", &config_with_key(KEY));
}

#[test]
fn unix_authenticated() {
    let dir = std::env::temp_dir().join(format!("sockserv-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = format!("unix://{}/s.sock", dir.display());
    exchange(&addr, &config_with_key(KEY));
    std::fs::remove_dir_all(&dir).unwrap();
}
