//! Helpers for kiln's end-to-end tests, which boot real guests under KVM.
//!
//! Where this host's KVM cannot boot the test kernel (see docs/TESTING.md), the tests
//! skip with a message, unless `CI=true` or `KILN_E2E_REQUIRE=1`, when they fail loudly:
//! `scripts/test` sets the latter when it runs them inside `scripts/harness`.

pub mod cli;
pub mod full;
pub mod serve;
pub mod steps;
pub mod vmm_proc;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

pub use kiln::vmm::{DriveSpec, GuestSpec, VmmProcess, DEFAULT_BOOT_ARGS};

/// Generous: inner guests in the nested-KVM harness boot in about a second.
pub const TIMEOUT: Duration = Duration::from_secs(120);

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("KILN_E2E_REQUIRE").is_ok_and(|v| v == "1")
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("kiln-e2e-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A guest booted with its console captured to a file.
pub struct Booted {
    pub vm: VmmProcess,
    pub console: PathBuf,
    _dir: TempDir,
}

impl Booted {
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Waits for the VMM to exit; returns its exit code.
    pub fn exit_code(&mut self) -> i32 {
        let st = self.vm.wait_exit(TIMEOUT).expect("VMM exit");
        st.code().unwrap_or(-1)
    }
}

/// The minimal guest with `extra` appended to kiln-vmm's default command line.
pub fn spec(extra: &str) -> GuestSpec {
    let mut g = GuestSpec::minimal();
    g.boot_args = Some(format!("{DEFAULT_BOOT_ARGS} {extra}"));
    g
}

/// Spawns a VMM, configures `g` and sends InstanceStart.
pub fn boot(g: &GuestSpec) -> Booted {
    let dir = TempDir::new(&format!("boot-{}", unique()));
    let console = dir.path("console.log");
    let (vm, _) = VmmProcess::boot(g, console.to_str().expect("utf-8 path"), false, TIMEOUT)
        .expect("spawn, configure and start kiln-vmm");
    Booted {
        vm,
        console,
        _dir: dir,
    }
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Whether the guest kernel of `g` has been built.
fn guest_built(g: &GuestSpec) -> Result<(), String> {
    if g.kernel.is_file() {
        Ok(())
    } else {
        Err(format!(
            "{} is missing; run scripts/setup",
            g.kernel.display()
        ))
    }
}

/// Whether this host can boot the test kernel under KVM (probed once per process).
fn probe() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let g = spec("kiln.action=poweroff");
            guest_built(&g)?;
            let mut b = boot(&g);
            match b.vm.wait_ready(TIMEOUT) {
                Ok(_) => {
                    b.exit_code();
                    Ok(())
                }
                Err(e) => Err(format!(
                    "the test kernel does not boot under this host's KVM: {e}"
                )),
            }
        })
        .clone()
}

/// The backend `$KILN_E2E_BACKEND` asks for (None: the default, kiln-vmm).
fn backend_override() -> Option<String> {
    std::env::var("KILN_E2E_BACKEND")
        .ok()
        .filter(|n| !n.is_empty())
}

/// True when real guests can run here. Otherwise skips (returns false) or, under
/// `CI=true` / `KILN_E2E_REQUIRE=1`, panics: the suite never silently skips in CI.
/// With `KILN_E2E_BACKEND=qemu` guests run on any host (QEMU falls back to software
/// emulation), so only the guest files are checked.
pub fn require_kvm(test: &str) -> bool {
    let ready = match backend_override().as_deref() {
        Some("qemu") => guest_built(&spec("")),
        _ => probe(),
    };
    match ready {
        Ok(()) => true,
        Err(why) if required() => panic!(
            "{test}: cannot run real guests here ({why}); run the suite with scripts/test, which uses scripts/harness when the host's KVM cannot boot the guest"
        ),
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// Builds an ext4 image of `size_mib` holding the files of `dir`.
pub fn ext4_image(img: &Path, dir: &Path, size_mib: u32) {
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(dir)
        .arg(img)
        .arg(format!("{size_mib}M"))
        .status()
        .expect("mkfs.ext4 (e2fsprogs) is installed by scripts/setup");
    assert!(st.success(), "mkfs.ext4 failed");
}

/// Reads a file out of an ext4 image without mounting it (`debugfs -R cat`).
pub fn ext4_cat(img: &Path, path: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(img)
        .output()
        .expect("debugfs (e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `key=` in the agent's report line, e.g. `cpus`.
pub fn report_value(console: &str, key: &str) -> Option<u64> {
    let line = console.lines().find(|l| l.contains("kiln-agent: cpus="))?;
    let pat = format!("{key}=");
    let rest = &line[line.find(&pat)? + pat.len()..];
    rest.split_whitespace().next()?.trim().parse().ok()
}

/// A sandbox of `image` for `test`, or `None` when real guests cannot run here (see
/// [`require_kvm`]). It is removed when dropped.
pub fn sandbox(test: &str, image: &str) -> Option<kiln::Sandbox> {
    sandbox_with(test, kiln::Sandbox::builder().image(image))
}

/// Like [`sandbox`] with a prepared builder. `$KILN_E2E_BACKEND` (e.g. `qemu`) runs it
/// on that backend: scripts/test runs the exec and file suites once more that way.
pub fn sandbox_with(test: &str, b: kiln::SandboxBuilder) -> Option<kiln::Sandbox> {
    if !require_kvm(test) {
        return None;
    }
    let backend = backend_override();
    let b = match &backend {
        Some(name) => b.backend(name.as_str()),
        None => b,
    };
    let sb = b.create().unwrap_or_else(|e| panic!("{test}: create: {e}"));
    if let Some(name) = backend {
        assert_eq!(sb.backend().name(), name, "{test}: the sandbox's backend");
    }
    Some(sb)
}

/// Runs `sh -c script` and returns its output (panics on a kiln error).
pub fn sh(sb: &kiln::Sandbox, script: &str) -> kiln::ExecOutput {
    sb.exec(&kiln::ExecOptions::new(["sh", "-c", script]))
        .unwrap_or_else(|e| panic!("sh -c {script:?}: {e}"))
}

/// What the sandbox's cgroup used at its peak, and the kinds of memory charged to it now
/// (`memory.stat`: anon, file, shmem, kernel), in MiB; `None` without a group. The file
/// and snapshot suites print it: the figures behind `kiln::cgroup::VMM_OVERHEAD_MIB`.
pub fn cgroup_report(sb: &kiln::Sandbox) -> Option<String> {
    let g = kiln::cgroup::Group::of(sb.dir().parent()?, sb.id());
    let s = g.stats()?;
    let stat = std::fs::read_to_string(g.path().join("memory.stat")).unwrap_or_default();
    let mib = |b: u64| b >> 20;
    let mut out = format!(
        "cgroup {}: memory.max {} MiB, memory.peak {} MiB, memory.current {} MiB (guest {} MiB)",
        g.path().display(),
        s.memory_max.map_or(0, mib),
        s.memory_peak.map_or(0, mib),
        s.memory_current.map_or(0, mib),
        sb.record().memory_mib
    );
    for line in stat.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            if ["anon", "file", "shmem", "kernel"].contains(&k) {
                let v: u64 = v.trim().parse().unwrap_or(0);
                out.push_str(&format!(", {k} {} MiB", mib(v)));
            }
        }
    }
    Some(out)
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Polls `done` every 20 ms until it holds (true) or `limit` passes (false).
pub fn wait_until(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `pid` is a live process (not a zombie).
pub fn process_running(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(kiln::process::is_running)
}

/// The `kiln` binary next to the test binaries (target/<profile>).
pub fn kiln_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    for d in [dir.to_path_buf(), dir.join("..")] {
        if d.join("kiln").is_file() {
            return d.join("kiln");
        }
    }
    panic!("kiln binary not found next to {}", exe.display());
}

/// Runs `kiln bench ARGS` and returns its JSON report.
pub fn bench_json(args: &[&str]) -> serde_json::Value {
    let kiln = kiln_bin();
    let out = std::process::Command::new(&kiln)
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("run kiln bench");
    assert!(
        out.status.success(),
        "kiln bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

/// Asserts that `v[key].p50` is a positive number.
pub fn positive_p50(v: &serde_json::Value, key: &str) {
    assert!(
        v[key]["p50"].as_f64().is_some_and(|x| x > 0.0),
        "{key}: {v}"
    );
}
