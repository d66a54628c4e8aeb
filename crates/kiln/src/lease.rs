//! Host-wide leases of numbered resources (a jailed VMM's uid, a sandbox network's /30),
//! safe across processes and needing no clean-up after a crash.
//!
//! A lease is a file `<dir>/<name of the number>` holding its holder's name, written
//! under an exclusive `flock` on `<dir>/.lock`. Whether a lease is still in force is the
//! caller's question (`is_live`: does the holder's folder or namespace still exist?), asked
//! under the same lock, so a lease whose holder is gone is stale and taken again.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A lease file or its lock could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {cause}", path.display())]
pub struct LeaseError {
    pub what: &'static str,
    pub path: PathBuf,
    pub cause: std::io::Error,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LeaseError {
    let path = path.to_path_buf();
    move |cause| LeaseError { what, path, cause }
}

/// One kind of lease: a folder, and how its numbers are written as file names.
pub struct Registry {
    dir: PathBuf,
    name: fn(u32) -> String,
    parse: fn(&str) -> Option<u32>,
}

impl Registry {
    /// Numbers written in decimal.
    pub fn decimal(dir: impl Into<PathBuf>) -> Registry {
        Registry::new(dir, |n| n.to_string(), |s| s.parse().ok())
    }

    pub fn new(
        dir: impl Into<PathBuf>,
        name: fn(u32) -> String,
        parse: fn(&str) -> Option<u32>,
    ) -> Registry {
        Registry {
            dir: dir.into(),
            name,
            parse,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registry's lock, held while the file is open.
    fn lock(&self) -> Result<fs::File, LeaseError> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io("cannot create", &self.dir))?;
        let path = self.dir.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        // SAFETY: flock on an fd we own; blocks until the other holder is done.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("cannot lock", &path)(std::io::Error::last_os_error()));
        }
        Ok(f)
    }

    /// Who holds `n`, if a lease file names anyone.
    fn holder(&self, n: u32) -> Option<String> {
        let s = fs::read_to_string(self.dir.join((self.name)(n))).ok()?;
        Some(s.trim().to_string())
    }

    /// Leases the first of `candidates` that no live lease holds to `holder`, then runs
    /// `claim` with it, still under the lock; if `claim` fails the lease is dropped and
    /// its error returned. `None`: every candidate is held. `is_live(n, holder)` says
    /// whether a lease of `n` naming `holder` is still in force. A holder holds one lease:
    /// once `claim` succeeds, any other (stale) lease naming it is dropped.
    pub fn allocate<E: From<LeaseError>>(
        &self,
        holder: &str,
        candidates: impl IntoIterator<Item = u32>,
        is_live: impl Fn(u32, &str) -> bool,
        claim: impl FnOnce(u32) -> Result<(), E>,
    ) -> Result<Option<u32>, E> {
        let _held = self.lock()?;
        for n in candidates {
            if let Some(other) = self.holder(n) {
                if is_live(n, &other) {
                    continue;
                }
            }
            let path = self.dir.join((self.name)(n));
            let mut f = fs::File::create(&path).map_err(io("cannot write", &path))?;
            writeln!(f, "{holder}").map_err(io("cannot write", &path))?;
            drop(f);
            if let Err(e) = claim(n) {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
            for (m, _) in self
                .leases()
                .into_iter()
                .filter(|(m, h)| *m != n && h == holder)
            {
                let _ = fs::remove_file(self.dir.join((self.name)(m)));
            }
            return Ok(Some(n));
        }
        Ok(None)
    }

    /// Drops `holder`'s lease of `n`; a lease naming someone else is left alone.
    pub fn release(&self, n: u32, holder: &str) -> Result<(), LeaseError> {
        let _held = self.lock()?;
        if self.holder(n).as_deref() == Some(holder) {
            let _ = fs::remove_file(self.dir.join((self.name)(n)));
        }
        Ok(())
    }

    /// Every lease file: its number and holder (stale ones included).
    pub fn leases(&self) -> Vec<(u32, String)> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(u32, String)> = rd
            .flatten()
            .filter_map(|e| {
                let n = (self.parse)(e.file_name().to_str()?)?;
                Some((n, self.holder(n)?))
            })
            .collect();
        out.sort();
        out
    }

    /// The numbers `holder` has leases of.
    pub fn held_by(&self, holder: &str) -> Vec<u32> {
        self.leases()
            .into_iter()
            .filter(|(_, h)| h == holder)
            .map(|(n, _)| n)
            .collect()
    }
}

/// Where in a span of `span` numbers to start looking for `key`, so leases spread and a
/// free one is usually found at once.
pub fn spread(key: &str, span: u64) -> u64 {
    key.bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % span.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(name: &str) -> (Registry, PathBuf) {
        let dir = std::env::temp_dir().join(format!("kiln-lease-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        (Registry::decimal(&dir), dir)
    }

    #[test]
    fn live_leases_are_skipped_stale_ones_taken_again() {
        let (r, dir) = registry("stale");
        let live = |_: u32, h: &str| h != "gone";
        let ok = |_| Ok::<(), LeaseError>(());
        assert_eq!(r.allocate("a", 1..4, live, ok).unwrap(), Some(1));
        assert_eq!(r.allocate("b", 1..4, live, ok).unwrap(), Some(2));
        assert_eq!(r.allocate("gone", 3..4, live, ok).unwrap(), Some(3));
        // A lease whose holder is gone is taken again.
        assert_eq!(r.allocate("c", 3..4, live, ok).unwrap(), Some(3));
        assert_eq!(r.allocate("d", 1..4, live, ok).unwrap(), None);
        // A holder holds one lease: a new one drops its stale other.
        let r2 = Registry::decimal(dir.join("two"));
        assert_eq!(r2.allocate("gone", 1..2, live, ok).unwrap(), Some(1));
        assert_eq!(r2.allocate("gone", 2..3, live, ok).unwrap(), Some(2));
        assert_eq!(r2.held_by("gone"), vec![2]);
        assert_eq!(r.held_by("b"), vec![2]);
        r.release(2, "a").unwrap();
        assert_eq!(r.held_by("b"), vec![2], "another holder's lease stays");
        r.release(2, "b").unwrap();
        assert_eq!(r.allocate("d", 1..4, live, ok).unwrap(), Some(2));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_claim_drops_the_lease() {
        let (r, dir) = registry("claim");
        let err = r
            .allocate(
                "a",
                5..6,
                |_, _| true,
                |n| {
                    Err(io("claim", Path::new("x"))(
                        std::io::Error::from_raw_os_error(n as i32),
                    ))
                },
            )
            .unwrap_err();
        assert_eq!(err.cause.raw_os_error(), Some(5));
        assert!(r.leases().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_holders_get_distinct_numbers() {
        let (r, dir) = registry("race");
        let r = std::sync::Arc::new(r);
        let got: Vec<u32> = (0..8)
            .map(|i| {
                let r = r.clone();
                std::thread::spawn(move || {
                    r.allocate(
                        &format!("h{i}"),
                        0..8,
                        |_, _| true,
                        |_| Ok::<(), LeaseError>(()),
                    )
                    .unwrap()
                    .unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, (0..8).collect::<Vec<_>>(), "{got:?}");
        fs::remove_dir_all(dir).unwrap();
    }
}
