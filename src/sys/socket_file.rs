//! Unix socket files, for stream listeners and datagram sockets alike: a
//! stale file (nobody bound behind it) is replaced, a live socket or a file
//! that is not a socket is left alone, and the file we bound is removed when
//! we close, if it is still ours.

use std::fmt::Display;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// The socket file we bound; removed on drop unless someone replaced it.
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Remembers the file just bound at `path` (its device and inode).
    pub fn record(path: &Path) -> io::Result<SocketFile> {
        let meta = fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Makes room to bind `path`: removes a socket file whose socket is gone.
/// `probe` tries to reach the socket there (connect): success means it is
/// live (`live` says how), a refusal that it is stale.
pub fn clear_stale(
    path: &Path,
    addr: &dyn Display,
    live: &str,
    probe: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<()> {
    let in_use = |why: &str| Error::new(ErrorKind::AddressInUse, format!("{addr}: {why}"));
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format_args!("inspecting {addr}"), &e)),
    };
    if !meta.file_type().is_socket() {
        return Err(in_use(
            "the path exists and is not a socket; it was left alone",
        ));
    }
    match probe(path) {
        Ok(()) => Err(in_use(live)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path)
            .map_err(|e| Error::io(format_args!("removing the stale socket {addr}"), &e)),
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            Err(in_use("a socket of another type is bound to this path"))
        }
        Err(e) => Err(Error::io(
            format_args!("probing the existing socket {addr}"),
            &e,
        )),
    }
}
