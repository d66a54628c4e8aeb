//! File transfer: read_file streams a file out, write_file streams one in.
//!
//! * read_file: `FileStart{size, mode}`, `DataOut` chunks of at most [`CHUNK`]
//!   bytes, an empty `DataOut` with `FLAG_EOF`, then `Done`. An error before the
//!   data is the only reply; a read error in the middle is an `Error` reply in place
//!   of the EOF frame.
//! * write_file: the data goes to `.<name>.kiln-tmp-<n>` in the target's directory
//!   (mode 0600 while written), gets its mode (default 0644, exact: no umask) at EOF
//!   and is renamed over the target, so readers see the old or the new file, never
//!   a part. Reply `Written{bytes}`. On an error the reply is sent at once, the temp
//!   file is removed and the rest of the data is dropped (see `routes`).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_proto::{ErrorReply, Kind, Reply, CHUNK, FLAG_EOF};

use super::fsops::{mkdir_p, req_path};
use super::inbox::Data;
use super::routes::Op;
use super::sys::{errno_error, invalid, io_error};

const DEFAULT_MODE: u32 = 0o644;
/// Bytes of the target name kept in the temp name (NAME_MAX is 255).
const TMP_NAME_KEEP: usize = 128;

pub fn read(op: Op, path: &str) {
    let mut f = match open_for_read(path) {
        Ok(f) => f,
        Err(e) => return op.fail(e),
    };
    let meta = match f.metadata() {
        Ok(m) => m,
        Err(e) => return op.fail(io_error(&e, "stat", path)),
    };
    if meta.is_dir() {
        return op.fail(errno_error(libc::EISDIR, "read", path));
    }
    let start = Reply::FileStart {
        size: meta.len(),
        mode: meta.permissions().mode() & 0o7777,
    };
    if !op.reply(&start) {
        return op.abandon();
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !op.send(Kind::DataOut, 0, &buf[..n]) {
                    return op.abandon();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return op.fail(io_error(&e, "read", path)),
        }
    }
    op.send(Kind::DataOut, FLAG_EOF, &[]);
    op.finish(Reply::Done)
}

/// Opens without blocking on a FIFO, then reads blocking.
fn open_for_read(path: &str) -> Result<File, ErrorReply> {
    let p = req_path(path)?;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p)
        .map_err(|e| io_error(&e, "open", path))?;
    super::sys::set_blocking(&f);
    Ok(f)
}

pub fn write(op: Op, path: &str, mode: Option<u32>, parents: bool) {
    let Some(inbox) = op.inbox.clone() else {
        return op.fail(invalid("write_file without an inbox (agent bug)", None));
    };
    let mut next = || inbox.wait_data();
    match write_file(path, mode, parents, &mut next) {
        Ok(Some(bytes)) => op.finish(Reply::Written { bytes }),
        Ok(None) => op.abandon(),
        Err(e) => op.fail(e),
    }
}

/// Writes the data `next` yields into `path`. `Ok(None)`: cancelled.
fn write_file(
    path: &str,
    mode: Option<u32>,
    parents: bool,
    next: &mut dyn FnMut() -> Data,
) -> Result<Option<u64>, ErrorReply> {
    let target = req_path(path)?;
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(invalid("path does not name a file", Some(path)));
    };
    if parents {
        // A file where the parent directory should be: ENOTDIR, as open would say.
        mkdir_p(dir, 0o755).map_err(|e| {
            let e = if e == libc::EEXIST { libc::ENOTDIR } else { e };
            errno_error(e, "create parent directories", path)
        })?;
    }
    let (mut file, tmp) =
        create_temp(dir, name.as_bytes()).map_err(|e| io_error(&e, "create", path))?;
    let mut guard = TempFile(Some(tmp));
    let mut total = 0u64;
    loop {
        match next() {
            Data::Bytes(b) => {
                file.write_all(&b)
                    .map_err(|e| io_error(&e, "write", path))?;
                total += b.len() as u64;
            }
            Data::Eof => break,
            Data::Cancelled => return Ok(None),
        }
    }
    let bits = mode.unwrap_or(DEFAULT_MODE) & 0o7777;
    file.set_permissions(fs::Permissions::from_mode(bits))
        .map_err(|e| io_error(&e, "chmod", path))?;
    drop(file);
    let tmp = guard.0.take().expect("temp path present until renamed");
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&e, "rename into place", path));
    }
    Ok(Some(total))
}

/// Creates `.<name>.kiln-tmp-<n>` in `dir` (O_EXCL; retries on a name in use).
fn create_temp(dir: &Path, name: &[u8]) -> io::Result<(File, PathBuf)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let keep = &name[..name.len().min(TMP_NAME_KEEP)];
    let mut last = io::Error::from_raw_os_error(libc::EEXIST);
    for _ in 0..16 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = b".".to_vec();
        tmp_name.extend_from_slice(keep);
        tmp_name.extend_from_slice(format!(".kiln-tmp-{}-{n}", std::process::id()).as_bytes());
        let tmp = dir.join(OsString::from_vec(tmp_name));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Removes the temp file unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: Vec<Data>) -> impl FnMut() -> Data {
        let mut it = chunks.into_iter();
        move || it.next().unwrap_or(Data::Eof)
    }

    #[test]
    fn writes_atomically_and_cleans_up_on_cancel() {
        let dir = std::env::temp_dir().join(format!("kiln-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("sub/f.bin");
        let p = path.to_str().unwrap();
        let mut next = feed(vec![
            Data::Bytes(vec![1, 2]),
            Data::Bytes(vec![3]),
            Data::Eof,
        ]);
        assert_eq!(write_file(p, Some(0o600), true, &mut next), Ok(Some(3)));
        assert_eq!(fs::read(&path).unwrap(), [1, 2, 3]);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let mut next = feed(vec![Data::Bytes(vec![9]), Data::Cancelled]);
        assert_eq!(write_file(p, None, false, &mut next), Ok(None));
        assert_eq!(fs::read(&path).unwrap(), [1, 2, 3], "the old file stays");
        let names: Vec<_> = fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
