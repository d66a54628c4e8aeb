//! The sandbox life cycle `kiln bench api` measures: create → exec `echo WORD` (output
//! checked) → delete, for N sandboxes by C workers in parallel, through the REST API or
//! the library directly (the baseline).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kiln::{ExecOptions, Sandbox};
use kiln_server::api::{CreateSandbox, ExecRequest};
use kiln_server::client::{Client, Output};

use super::stats::ms;

/// One way to create, exec in and delete a sandbox.
pub trait Cycle: Sync {
    type Handle: Send;
    fn create(&self) -> Result<Self::Handle>;
    /// Runs `echo word`; returns its exit code and stdout.
    fn echo(&self, h: &Self::Handle, word: &str) -> Result<(Option<i32>, Vec<u8>)>;
    fn delete(&self, h: Self::Handle) -> Result<()>;
}

/// Through the API: sandbox ids are the handles.
pub struct Api {
    pub client: Client,
    pub image: String,
    pub memory_mib: u64,
    /// Every id created (to tell our leftovers from other sandboxes on a shared server).
    pub created: Mutex<Vec<String>>,
    /// The server's folder of the first sandbox (its parent is the server's state dir).
    pub first_dir: Mutex<Option<PathBuf>>,
}

impl Cycle for Api {
    type Handle = String;
    fn create(&self) -> Result<String> {
        let req = CreateSandbox {
            image: Some(self.image.clone()),
            memory_mib: Some(self.memory_mib),
            ..Default::default()
        };
        let v = self.client.create(&req)?;
        self.created.lock().unwrap().push(v.id.clone());
        if let Some(dir) = v.extra.get("dir").and_then(|d| d.as_str()) {
            self.first_dir
                .lock()
                .unwrap()
                .get_or_insert_with(|| dir.into());
        }
        Ok(v.id)
    }
    fn echo(&self, id: &String, word: &str) -> Result<(Option<i32>, Vec<u8>)> {
        let mut out = Vec::new();
        let exit = self
            .client
            .exec(id, &ExecRequest::new(["echo", word]), |o| {
                if let Output::Stdout(b) = o {
                    out.extend_from_slice(b);
                }
            })?;
        Ok((exit.code, out))
    }
    fn delete(&self, id: String) -> Result<()> {
        self.client.remove(&id)?;
        Ok(())
    }
}

/// The library in this process: the baseline.
pub struct Library {
    pub image: String,
    pub memory_mib: u64,
}

impl Cycle for Library {
    type Handle = Sandbox;
    fn create(&self) -> Result<Sandbox> {
        Ok(Sandbox::builder()
            .image(&self.image)
            .memory_mib(self.memory_mib)
            .create()?)
    }
    fn echo(&self, sb: &Sandbox, word: &str) -> Result<(Option<i32>, Vec<u8>)> {
        let out = sb.exec(&ExecOptions::new(["echo", word]))?;
        Ok((out.status.code, out.stdout))
    }
    fn delete(&self, sb: Sandbox) -> Result<()> {
        Ok(sb.remove()?)
    }
}

/// What a run measured (milliseconds per operation).
#[derive(Default)]
pub struct Measured {
    pub create: Vec<f64>,
    pub exec: Vec<f64>,
    pub delete: Vec<f64>,
    pub errors: Vec<String>,
    pub wall: Duration,
}

/// Runs the cycle `n` times with `workers` in parallel; prints a dot per sandbox if `dots`.
pub fn drive<C: Cycle>(c: &C, n: usize, workers: usize, dots: bool) -> Measured {
    let next = AtomicUsize::new(0);
    let m = Mutex::new(Measured::default());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return;
                }
                one(c, i, &m);
                if dots {
                    eprint!(".");
                }
            });
        }
    });
    let mut m = m.into_inner().unwrap();
    m.wall = t0.elapsed();
    m
}

/// One create → echo → delete; the error of a step is recorded, and a sandbox that was
/// created is deleted whatever happened to its exec.
fn one<C: Cycle>(c: &C, i: usize, m: &Mutex<Measured>) {
    let fail = |step: &str, e: anyhow::Error| {
        m.lock().unwrap().errors.push(format!("{step} #{i}: {e:#}"));
    };
    let t = Instant::now();
    let h = match c.create() {
        Ok(h) => h,
        Err(e) => return fail("create", e),
    };
    m.lock().unwrap().create.push(ms(t.elapsed()));
    let word = format!("kiln-bench-{i}");
    let t = Instant::now();
    match c.echo(&h, &word).and_then(|r| check(&word, r)) {
        Ok(()) => m.lock().unwrap().exec.push(ms(t.elapsed())),
        Err(e) => fail("exec", e),
    }
    let t = Instant::now();
    match c.delete(h) {
        Ok(()) => m.lock().unwrap().delete.push(ms(t.elapsed())),
        Err(e) => fail("delete", e),
    }
}

fn check(word: &str, (code, out): (Option<i32>, Vec<u8>)) -> Result<()> {
    let want = format!("{word}\n");
    if code != Some(0) || out != want.as_bytes() {
        bail!(
            "echo {word}: exit code {code:?}, stdout {:?} (expected 0 and {want:?})",
            String::from_utf8_lossy(&out)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cycle without VMs whose every third exec prints the wrong thing.
    struct Fake;

    impl Cycle for Fake {
        type Handle = usize;
        fn create(&self) -> Result<usize> {
            Ok(0)
        }
        fn echo(&self, _: &usize, word: &str) -> Result<(Option<i32>, Vec<u8>)> {
            let n: usize = word.trim_start_matches("kiln-bench-").parse()?;
            let out = if n.is_multiple_of(3) {
                "x\n".into()
            } else {
                format!("{word}\n")
            };
            Ok((Some(0), out.into_bytes()))
        }
        fn delete(&self, _: usize) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_sandbox_is_measured_and_bad_output_counted() {
        let m = drive(&Fake, 9, 4, false);
        assert_eq!(m.create.len(), 9);
        assert_eq!(m.delete.len(), 9);
        assert_eq!(m.exec.len(), 6);
        assert_eq!(m.errors.len(), 3);
        assert!(m.errors[0].starts_with("exec #"), "{:?}", m.errors);
    }
}
