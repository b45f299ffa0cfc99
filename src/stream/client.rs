//! The connecting side: resolve, connect within the connect timeout, then
//! TLS for a `tls://` address and the handshake when the config has keys.

use socket2::{Domain, Socket, Type};

use crate::addr::stream::Address;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::proto::handshake::Role;
use crate::stream::connection::Connection;

/// Connects to `addr` (`tcp://HOST:PORT`, `tls://HOST:PORT` or `unix://PATH`). Each resolved
/// address is tried in turn; the error of the last one is reported.
pub fn connect(addr: &str, config: &Config) -> Result<Connection> {
    let addr = Address::parse(addr)?;
    // TLS is checked (trust anchors are needed) and built once per
    // connect; the server name defaults to the host connected to.
    let config = &config.for_dialing(&addr)?;
    let mut last_error = None;
    for target in addr.resolve()? {
        let domain = if target.is_unix() {
            Domain::UNIX
        } else {
            target.domain()
        };
        let attempt = Socket::new(domain, Type::STREAM, None).and_then(|s| {
            s.connect_timeout(&target, config.connect_timeout)
                .map(|()| s)
        });
        match attempt {
            Ok(socket) => {
                return Connection::establish(socket, config, Role::Client).map_err(|(e, _)| e)
            }
            // A Unix path with no socket behind it: nobody accepts there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last_error = Some(Error::new(
                    ErrorKind::ConnectionRefused,
                    format!("connecting to {addr}: no socket at that path"),
                ))
            }
            Err(e) => last_error = Some(Error::io(format_args!("connecting to {addr}"), &e)),
        }
    }
    Err(last_error.expect("resolve returns at least one address"))
}
