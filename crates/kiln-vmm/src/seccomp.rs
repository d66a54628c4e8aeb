//! Per-thread seccomp filters. The rules live in `seccomp/x86_64.json` (seccompiler's
//! JSON format, one filter per thread kind); build.rs compiles them into BPF that is
//! embedded here. Each thread installs its own filter right after it starts, before it
//! does its work; a syscall outside it raises SIGSYS (the rules' `trap` action), and
//! the handler below writes one line to stderr (the VMM log) and exits 159 (128+31):
//! `seccomp: killed on syscall NAME (NR) in thread T (KIND filter)`.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// One BPF instruction as build.rs writes it: code, jump-if-true, jump-if-false, k.
type Insn = (u16, u8, u8, u32);

include!(concat!(env!("OUT_DIR"), "/seccomp_filters.rs"));

/// Exit status after a seccomp violation: killed by SIGSYS (128 + 31).
pub const EXIT_VIOLATION: i32 = 128 + libc::SIGSYS;

/// The thread kinds that have a filter, as named in `seccomp/x86_64.json`.
pub const KINDS: &[&str] = &[
    "main", "signals", "api", "devices", "vcpu", "uffd", "metrics", "mmds",
];

static NAMES: &str = include_str!("../seccomp/x86_64-syscall-names.txt");

thread_local! {
    static KIND: Cell<usize> = const { Cell::new(usize::MAX) };
    /// The thread's name, kept at install: the handler may make no syscall the filter
    /// denies (reading it back needs prctl or /proc).
    static NAME: Cell<[u8; 16]> = const { Cell::new([0; 16]) };
}

/// Why a filter could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no seccomp filter for thread kind {0:?} (known: {KINDS:?})")]
    UnknownKind(String),
    #[error("cannot install the {kind} seccomp filter: {source}")]
    Install {
        kind: String,
        source: seccompiler::Error,
    },
}

/// Whether the VMM's threads install their filters ([`enter`]). kiln-vmm's `main` turns
/// this on unless it runs with `--no-seccomp`; a library user (the unit tests) starts
/// with it off.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Makes every thread that starts after this install its filter ([`enter`]).
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

/// Whether [`enter`] installs filters.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

/// Called first thing on each of the VMM's threads: installs `kind`'s filter when
/// filters are on. A thread that cannot be filtered must not run: the VMM exits with
/// one line saying why (kiln shows the end of the VMM's log as the failure).
///
/// Filters stack, so each thread's effective rules are its own and its spawner's:
/// `main` and `api` allow what every thread they start needs (docs/VMM.md).
pub fn enter(kind: &str) {
    if !enabled() {
        return;
    }
    if let Err(e) = install(kind) {
        let msg = format!("{e}; run with --no-seccomp only to debug");
        eprintln!("kiln-vmm: error: {msg}");
        std::process::exit(crate::exit::code::VMM_ERROR);
    }
}

/// The BPF program of one thread kind.
pub fn program(kind: &str) -> Result<seccompiler::BpfProgram, Error> {
    let (_, insns) = FILTERS
        .iter()
        .find(|(k, _)| *k == kind)
        .ok_or_else(|| Error::UnknownKind(kind.into()))?;
    Ok(insns
        .iter()
        .map(|&(code, jt, jf, k)| seccompiler::sock_filter { code, jt, jf, k })
        .collect())
}

/// Installs `kind`'s filter on the calling thread (and threads it spawns later), with
/// the SIGSYS reporter. Filters stack: a thread spawned after this runs under this
/// filter and its own.
pub fn install(kind: &str) -> Result<(), Error> {
    let prog = program(kind)?;
    let idx = KINDS.iter().position(|k| *k == kind).unwrap_or(usize::MAX);
    install_reporter();
    KIND.with(|k| k.set(idx));
    let mut name = [0u8; 16];
    let own = std::thread::current()
        .name()
        .unwrap_or("?")
        .as_bytes()
        .to_vec();
    let n = own.len().min(15);
    name[..n].copy_from_slice(&own[..n]);
    NAME.with(|c| c.set(name));
    seccompiler::apply_filter(&prog).map_err(|source| Error::Install {
        kind: kind.into(),
        source,
    })
}

/// The x86_64 name of syscall `nr`, or "unknown".
pub fn syscall_name(nr: i64) -> &'static str {
    NAMES
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(n, _)| n.parse::<i64>() == Ok(nr))
        .map_or("unknown", |(_, name)| name)
}

fn install_reporter() {
    // SAFETY: a zeroed sigaction with a valid handler and SA_SIGINFO is well formed.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_sigsys;
        act.sa_sigaction = handler as usize;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut());
    }
}

/// A line buffer on the stack: the handler may not allocate.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// `siginfo_t`'s SIGSYS fields on x86_64 (`_sigsys`): call address, syscall, arch.
#[repr(C)]
struct SigSys {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: usize,
    syscall: i32,
    arch: u32,
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    use std::fmt::Write as _;
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO; SIGSYS fills `_sigsys`.
    let nr = i64::from(unsafe { (*info.cast::<SigSys>()).syscall });
    let kind = KIND.with(Cell::get);
    let kind = KINDS.get(kind).copied().unwrap_or("inherited");
    let name = NAME.with(Cell::get);
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let thread = std::str::from_utf8(&name[..end]).unwrap_or("?");
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    let _ = writeln!(
        line,
        "seccomp: killed on syscall {} ({nr}) in thread {thread} ({kind} filter)",
        syscall_name(nr)
    );
    // SAFETY: write(2) and _exit(2) are async-signal-safe and allowed by every filter.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::_exit(EXIT_VIOLATION);
    }
}
