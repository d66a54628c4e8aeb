//! Parsing of the `kiln.*` keys on the kernel command line.
//!
//! The kernel does not hand parameters containing a dot to init (it takes them
//! for module parameters), so the agent reads `/proc/cmdline` and parses it
//! here. Parsing is pure: it turns the command line into a list of
//! [`Directive`]s in command-line order and never fails; a malformed value
//! becomes [`Directive::Bad`], which the caller reports and skips.
//!
//! Rules:
//! - Parameters are split on whitespace, except inside double quotes (as the
//!   kernel does: `kiln.write="/a,b c"` is one parameter with value `/a,b c`).
//! - Only keys starting with `kiln.` are looked at; unknown `kiln.*` keys are
//!   ignored, like every other kernel parameter.
//! - Values are split on `,` first, then each field is percent-decoded (`%HH`,
//!   e.g. `%20` for a space, `%2C` for a comma, `%25` for `%`); a `%` not
//!   followed by two hex digits is kept as is.
//! - Paths must be non-empty and must not contain NUL (`%00`).
//!
//! Directives (see [`Directive`]): `kiln.report`, `kiln.verbose`, `kiln.mount`,
//! `kiln.cat`, `kiln.write`, `kiln.action`, and for the boot itself `kiln.root`,
//! `kiln.overlay`, `kiln.hostname`, `kiln.net` and `kiln.poweroff`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// What to do once the agent has signalled ready (`kiln.action=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Power the VM off (the VMM exits 0).
    Poweroff,
    /// Reboot the VM.
    Reboot,
    /// Exit PID 1, so that the kernel panics ("Attempted to kill init!").
    Panic,
    /// Stay up, reaping zombies.
    #[default]
    Wait,
}

/// `kiln.mount=<dev>,<dir>,<ro|rw>[,<fstype>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub dev: PathBuf,
    pub dir: PathBuf,
    pub read_only: bool,
    pub fstype: String,
}

/// One recognised `kiln.*` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// `kiln.report=1`: print online CPUs and MemTotal.
    Report,
    /// `kiln.mount=...`.
    Mount(MountSpec),
    /// `kiln.cat=<path>`: print the start of a file.
    Cat(PathBuf),
    /// `kiln.write=<path>,<text>`: create/truncate a file and write text.
    Write { path: PathBuf, data: Vec<u8> },
    /// `kiln.action=...`.
    Action(Action),
    /// `kiln.verbose=1` (or bare `kiln.verbose`): one console line per boot stage
    /// that is otherwise silent (e.g. whether the vsock server is up).
    Verbose,
    /// `kiln.root=<dev>`: an ext4 device mounted read-only as the lower layer of an
    /// overlay that becomes `/`.
    Root(PathBuf),
    /// `kiln.overlay=<dev>`: an ext4 scratch device holding the overlay's writable
    /// layer (`upper/`, `work/`); without it the writable layer is a tmpfs.
    Overlay(PathBuf),
    /// `kiln.hostname=<name>`: 1 to 64 of `A-Z a-z 0-9 - .` (default "kiln").
    Hostname(String),
    /// `kiln.poweroff=reboot`: the VM has no power-off device (QEMU microvm without
    /// ACPI halts instead of powering off), so power off by rebooting: the VMM runs
    /// with `-no-reboot` and exits on a guest reboot.
    PoweroffByReboot,
    /// `kiln.net=<addr>/<prefix>,<gateway>[,<mtu>]`: configure `eth0` (see
    /// [`crate::net`]).
    Net(crate::net::NetSpec),
    /// A recognised key with a malformed value, as written on the command line.
    Bad { key: String, value: String },
}

const DEFAULT_FSTYPE: &str = "ext4";

/// Parses a whole command line (the contents of `/proc/cmdline`).
pub fn parse(cmdline: &[u8]) -> Vec<Directive> {
    split_params(cmdline)
        .into_iter()
        .filter_map(|param| {
            let (key, value) = split_key_value(param);
            parse_param(key, value)
        })
        .collect()
}

/// Splits the command line into parameters on ASCII whitespace outside double
/// quotes.
fn split_params(cmdline: &[u8]) -> Vec<&[u8]> {
    let mut params = Vec::new();
    let mut start = None;
    let mut in_quote = false;
    for (i, &b) in cmdline.iter().enumerate() {
        if b == b'"' {
            in_quote = !in_quote;
        }
        let is_space = b.is_ascii_whitespace() || b == 0;
        match (start, is_space && !in_quote) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                params.push(&cmdline[s..i]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        params.push(&cmdline[s..]);
    }
    params
}

/// Splits `key=value` at the first `=` and strips the kernel's quoting: a
/// leading quote on the parameter or on the value, and a trailing quote.
fn split_key_value(param: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut param = param.strip_prefix(b"\"").unwrap_or(param);
    param = param.strip_suffix(b"\"").unwrap_or(param);
    match param.iter().position(|&b| b == b'=') {
        Some(eq) => {
            let value = &param[eq + 1..];
            (
                &param[..eq],
                Some(value.strip_prefix(b"\"").unwrap_or(value)),
            )
        }
        None => (param, None),
    }
}

fn parse_param(key: &[u8], value: Option<&[u8]>) -> Option<Directive> {
    let directive = match (key, value) {
        (b"kiln.report", None | Some(b"1")) => Some(Directive::Report),
        (b"kiln.report", Some(b"0")) => return None,
        (b"kiln.report", Some(_)) => None,
        (b"kiln.verbose", None | Some(b"1")) => Some(Directive::Verbose),
        (b"kiln.verbose", Some(b"0")) => return None,
        (b"kiln.verbose", Some(_)) => None,
        (b"kiln.root", Some(v)) => path_from(decode(v)).map(Directive::Root),
        (b"kiln.overlay", Some(v)) => path_from(decode(v)).map(Directive::Overlay),
        (b"kiln.hostname", Some(v)) => parse_hostname(v).map(Directive::Hostname),
        (b"kiln.mount", Some(v)) => parse_mount(v),
        (b"kiln.cat", Some(v)) => path_from(decode(v)).map(Directive::Cat),
        (b"kiln.write", Some(v)) => parse_write(v),
        (b"kiln.action", Some(v)) => parse_action(v).map(Directive::Action),
        (b"kiln.net", Some(v)) => std::str::from_utf8(v)
            .ok()
            .and_then(crate::net::NetSpec::parse)
            .map(Directive::Net),
        (b"kiln.poweroff", Some(b"reboot")) => Some(Directive::PoweroffByReboot),
        (b"kiln.poweroff", _) => None,
        // A recognised key without `=value`.
        (
            b"kiln.mount" | b"kiln.cat" | b"kiln.write" | b"kiln.action" | b"kiln.root"
            | b"kiln.overlay" | b"kiln.hostname" | b"kiln.net",
            None,
        ) => None,
        _ => return None,
    };
    Some(directive.unwrap_or_else(|| Directive::Bad {
        key: String::from_utf8_lossy(key).into_owned(),
        value: String::from_utf8_lossy(value.unwrap_or_default()).into_owned(),
    }))
}

fn parse_mount(value: &[u8]) -> Option<Directive> {
    let fields: Vec<Vec<u8>> = value.split(|&b| b == b',').map(decode).collect();
    let (dev, dir, mode, fstype) = match fields.as_slice() {
        [dev, dir, mode] => (dev, dir, mode, None),
        [dev, dir, mode, fstype] => (dev, dir, mode, Some(fstype)),
        _ => return None,
    };
    let read_only = match mode.as_slice() {
        b"ro" => true,
        b"rw" => false,
        _ => return None,
    };
    let fstype = match fstype {
        None => DEFAULT_FSTYPE.to_owned(),
        Some(f) if !f.is_empty() && !f.contains(&0) => String::from_utf8(f.clone()).ok()?,
        Some(_) => return None,
    };
    Some(Directive::Mount(MountSpec {
        dev: path_from(dev.clone())?,
        dir: path_from(dir.clone())?,
        read_only,
        fstype,
    }))
}

fn parse_write(value: &[u8]) -> Option<Directive> {
    let comma = value.iter().position(|&b| b == b',')?;
    let path = path_from(decode(&value[..comma]))?;
    let data = decode(&value[comma + 1..]);
    Some(Directive::Write { path, data })
}

fn parse_action(value: &[u8]) -> Option<Action> {
    match value {
        b"poweroff" => Some(Action::Poweroff),
        b"reboot" => Some(Action::Reboot),
        b"panic" => Some(Action::Panic),
        b"wait" => Some(Action::Wait),
        _ => None,
    }
}

/// A hostname: 1 to 64 ASCII letters, digits, `-` and `.` (the rule `reidentify`
/// checks too).
fn parse_hostname(value: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(value).ok()?;
    kiln_proto::identity::valid_hostname(name).then(|| name.to_owned())
}

/// A path from decoded bytes: non-empty and without NUL.
fn path_from(bytes: Vec<u8>) -> Option<PathBuf> {
    if bytes.is_empty() || bytes.contains(&0) {
        return None;
    }
    Some(PathBuf::from(OsString::from_vec(bytes)))
}

/// Percent-decodes `%HH`; any other `%` is kept literally.
fn decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(hi), Some(lo)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
