//! The files a user names: the config, `http.token_file` and
//! `termination_message.path` (SPEC section 7); also the image's
//! `/etc/passwd` and `/etc/group`, read for `user` lookups.
//!
//! This module owns the one rule for them: each must be a regular file
//! (symlinks followed, as in a ConfigMap or Secret mount) of bounded size.
//! A FIFO, a device, a directory or a file too large is refused with an
//! error that says what it is, and is never read nor written: `open` uses
//! `O_NONBLOCK`, so a FIFO cannot hold it (opening a FIFO blocks until the
//! other side opens it), and `fstat` on the open descriptor decides before
//! a byte moves. Reads are bounded by the limit even if the file grows.
//!
//! These calls still do file I/O: callers on the thread that forwards
//! signals and answers probes run them on tokio's blocking pool (a hung
//! network file system can stall even a regular file).

use std::fs::{Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest config file or `http.token_file` drainit reads (SPEC
/// section 7).
pub const MAX_BYTES: u64 = 1024 * 1024;

/// Reads the regular file at `path`, at most `limit` bytes; anything else
/// is an `InvalidInput` error saying what the file is.
pub fn read(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    regular(&meta)?;
    if meta.len() > limit {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

/// Opens the regular file at `path` for writing, creating it (mode 0644)
/// if it does not exist; anything else that is there is an `InvalidInput`
/// error and is not opened for writing. The termination record's
/// rewriter (`Recorder`, in `lifecycle::termination`) keeps the
/// descriptor open.
pub fn open_for_write(path: &Path) -> io::Result<std::fs::File> {
    match std::fs::metadata(path) {
        Ok(meta) => regular(&meta)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    // What was checked by path may have been swapped since.
    regular(&file.metadata()?)?;
    Ok(file)
}

/// `Ok` for a regular file, else an error naming what it is.
fn regular(meta: &Metadata) -> io::Result<()> {
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {what}, not a regular file"),
    ))
}

fn too_large(limit: u64) -> io::Error {
    const MIB: u64 = 1024 * 1024;
    let size = if limit % MIB == 0 {
        format!("{} MiB", limit / MIB)
    } else {
        format!("{} KiB", limit / 1024)
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is larger than {size}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    fn message(e: io::Error) -> String {
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        e.to_string()
    }

    #[test]
    fn a_regular_file_is_read_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), "a = 1\n").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        assert_eq!(read(&dir.path().join("link"), 100).unwrap(), b"a = 1\n");
    }

    #[test]
    fn a_fifo_a_device_and_a_directory_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        // No writer: a plain open would block forever here.
        let e = message(read(&fifo, 100).unwrap_err());
        assert_eq!(e, "it is a FIFO, not a regular file");
        let e = message(read(Path::new("/dev/zero"), 100).unwrap_err());
        assert_eq!(e, "it is a character device, not a regular file");
        let e = message(read(dir.path(), 100).unwrap_err());
        assert_eq!(e, "it is a directory, not a regular file");
        // No reader: a plain open for writing would block forever here.
        let e = message(open_for_write(&fifo).unwrap_err());
        assert_eq!(e, "it is a FIFO, not a regular file");
        let e = message(open_for_write(Path::new("/dev/null")).unwrap_err());
        assert_eq!(e, "it is a character device, not a regular file");
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big");
        std::fs::write(&file, vec![b'#'; 2049]).unwrap();
        let e = message(read(&file, 2048).unwrap_err());
        assert_eq!(e, "it is larger than 2 KiB");
        std::fs::write(&file, vec![b'#'; 2048]).unwrap();
        assert_eq!(read(&file, 2048).unwrap().len(), 2048);
    }

    #[test]
    fn open_for_write_creates_a_regular_file_or_opens_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("record");
        open_for_write(&file).unwrap();
        assert!(std::fs::metadata(&file).unwrap().is_file());
        std::fs::write(&file, "kept").unwrap();
        open_for_write(&file).unwrap();
        assert_eq!(
            std::fs::read(&file).unwrap(),
            b"kept",
            "the caller replaces the content"
        );
    }
}
