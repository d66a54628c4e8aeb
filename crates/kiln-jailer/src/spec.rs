//! What one jail holds, as `kiln-jailer`'s command line: parsed, validated and written
//! back (kiln builds a [`Spec`] and passes [`Spec::to_args`]).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A device node the jail may hold, created on a tmpfs `/dev` inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Kvm,
    NetTun,
    Userfaultfd,
}

impl Device {
    pub const ALL: [Device; 3] = [Device::Kvm, Device::NetTun, Device::Userfaultfd];

    pub fn name(self) -> &'static str {
        match self {
            Device::Kvm => "kvm",
            Device::NetTun => "net-tun",
            Device::Userfaultfd => "userfaultfd",
        }
    }

    /// The node's path under `/dev`, on the host and in the jail. Its device number is
    /// the host node's (a misc device such as userfaultfd has a dynamic minor).
    pub fn node(self) -> &'static str {
        match self {
            Device::Kvm => "kvm",
            Device::NetTun => "net/tun",
            Device::Userfaultfd => "userfaultfd",
        }
    }

    /// The host node's device number, if it is a character device.
    pub fn host_rdev(self) -> Option<u64> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(Path::new("/dev").join(self.node())).ok()?;
        m.file_type().is_char_device().then(|| m.rdev())
    }
}

/// A host file or folder made visible in the jail by a bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub src: PathBuf,
    /// Relative to the jail root, without `..`.
    pub dst: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Names the jail in messages and as its hostname.
    pub id: String,
    /// The folder that becomes `/`.
    pub root: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub binds: Vec<Bind>,
    pub devices: Vec<Device>,
    /// A cgroup v2 folder the jailed process joins.
    pub cgroup: Option<PathBuf>,
    /// A network namespace (e.g. `/run/netns/NAME`) the jailed process enters.
    pub netns: Option<PathBuf>,
    /// RLIMIT_NOFILE.
    pub nofile: u64,
    /// RLIMIT_FSIZE in bytes, if any.
    pub fsize: Option<u64>,
    /// The only environment the jailed program gets.
    pub env: Vec<(String, String)>,
    /// The program, as a path inside the jail, and its arguments.
    pub exec: PathBuf,
    pub args: Vec<OsString>,
    /// Build the jail in a new user namespace (for a caller who is not root): only the
    /// caller's own uid/gid are mapped (so `uid`/`gid` must be those), device nodes are
    /// bind mounted from the host instead of created.
    pub userns: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SpecError(pub String);

fn bad(msg: impl Into<String>) -> SpecError {
    SpecError(msg.into())
}

pub const DEFAULT_NOFILE: u64 = 2048;

pub const USAGE: &str = "usage: kiln-jailer --id ID --root DIR --uid UID --gid GID \
[--bind SRC:DST | --bind-ro SRC:DST]... [--dev kvm|net-tun|userfaultfd]... [--cgroup DIR] \
[--netns PATH] [--nofile N] [--fsize BYTES] [--env KEY=VALUE]... [--userns] -- PROGRAM [ARGS...]";

impl Spec {
    /// Parses the command line (without the program name) and validates it.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Spec, SpecError> {
        let mut it = args.into_iter();
        let mut id = None;
        let mut root = None;
        let (mut uid, mut gid) = (None, None);
        let mut s = Spec {
            id: String::new(),
            root: PathBuf::new(),
            uid: 0,
            gid: 0,
            binds: Vec::new(),
            devices: Vec::new(),
            cgroup: None,
            netns: None,
            nofile: DEFAULT_NOFILE,
            fsize: None,
            env: Vec::new(),
            exec: PathBuf::new(),
            args: Vec::new(),
            userns: false,
        };
        let mut exec = None;
        while let Some(flag) = it.next() {
            let flag = flag.to_string_lossy().into_owned();
            if flag == "--" {
                exec = it.next();
                s.args = it.by_ref().collect();
                break;
            }
            if flag == "--userns" {
                s.userns = true;
                continue;
            }
            let value = it
                .next()
                .ok_or_else(|| bad(format!("{flag} needs a value; {USAGE}")))?;
            let text = value.to_string_lossy().into_owned();
            match flag.as_str() {
                "--id" => id = Some(text),
                "--root" => root = Some(PathBuf::from(value)),
                "--uid" => uid = Some(number(&flag, &text)?),
                "--gid" => gid = Some(number(&flag, &text)?),
                "--bind" | "--bind-ro" => s.binds.push(bind(&value, flag == "--bind-ro")?),
                "--dev" => s.devices.push(device(&text)?),
                "--cgroup" => s.cgroup = Some(PathBuf::from(value)),
                "--netns" => s.netns = Some(PathBuf::from(value)),
                "--nofile" => s.nofile = number(&flag, &text)?,
                "--fsize" => s.fsize = Some(number(&flag, &text)?),
                "--env" => {
                    let (k, v) = text
                        .split_once('=')
                        .ok_or_else(|| bad(format!("--env {text}: expected KEY=VALUE")))?;
                    s.env.push((k.to_string(), v.to_string()));
                }
                _ => return Err(bad(format!("unknown option {flag}; {USAGE}"))),
            }
        }
        s.id = id.ok_or_else(|| bad(format!("--id is required; {USAGE}")))?;
        s.root = root.ok_or_else(|| bad(format!("--root is required; {USAGE}")))?;
        s.uid = uid.ok_or_else(|| bad(format!("--uid is required; {USAGE}")))?;
        s.gid = gid.ok_or_else(|| bad(format!("--gid is required; {USAGE}")))?;
        s.exec = PathBuf::from(exec.ok_or_else(|| bad(format!("no program after --; {USAGE}")))?);
        s.validate()?;
        Ok(s)
    }

    /// Checks what can be checked before anything is changed.
    pub fn validate(&self) -> Result<(), SpecError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(bad(format!(
                "--id {:?}: use 1 to 64 letters, digits, '-' or '_'",
                self.id
            )));
        }
        if self.uid == 0 || self.gid == 0 {
            return Err(bad(
                "--uid and --gid must not be 0: the jail runs its program unprivileged",
            ));
        }
        if self.uid > i32::MAX as u32 || self.gid > i32::MAX as u32 {
            return Err(bad("--uid and --gid must be below 2^31"));
        }
        // SAFETY: getters.
        let (me, my_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if self.userns && (self.uid != me || self.gid != my_gid) {
            return Err(bad(format!(
                "--userns maps only your own ids: give --uid {me} --gid {my_gid}"
            )));
        }
        if !self.userns && me != 0 {
            return Err(bad(
                "without root, the jail needs --userns (a user namespace of your own)",
            ));
        }
        if !self.root.is_absolute() || !self.root.is_dir() {
            return Err(bad(format!(
                "--root {}: must be an existing folder, given as an absolute path",
                self.root.display()
            )));
        }
        for b in &self.binds {
            if !b.src.is_absolute() || !b.src.exists() {
                return Err(bad(format!(
                    "bind source {}: must exist and be an absolute path",
                    b.src.display()
                )));
            }
        }
        for d in &self.devices {
            if d.host_rdev().is_none() {
                return Err(bad(format!(
                    "--dev {}: this host has no character device /dev/{}",
                    d.name(),
                    d.node()
                )));
            }
        }
        if let Some(c) = &self.cgroup {
            if !c.join("cgroup.procs").is_file() {
                return Err(bad(format!(
                    "--cgroup {}: not a cgroup v2 folder (no cgroup.procs)",
                    c.display()
                )));
            }
        }
        if let Some(n) = &self.netns {
            if !n.exists() {
                return Err(bad(format!(
                    "--netns {}: no such network namespace",
                    n.display()
                )));
            }
        }
        if self.nofile < 16 {
            return Err(bad("--nofile must be at least 16"));
        }
        inside(&self.exec).map_err(|e| bad(format!("program {}: {e}", self.exec.display())))?;
        Ok(())
    }

    /// The command line [`Spec::parse`] reads back.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |k: &str, v: OsString| {
            a.push(k.into());
            a.push(v);
        };
        push("--id", self.id.clone().into());
        push("--root", self.root.clone().into());
        push("--uid", self.uid.to_string().into());
        push("--gid", self.gid.to_string().into());
        for b in &self.binds {
            let mut v = b.src.clone().into_os_string();
            v.push(":");
            v.push(&b.dst);
            push(if b.read_only { "--bind-ro" } else { "--bind" }, v);
        }
        for d in &self.devices {
            push("--dev", d.name().into());
        }
        if let Some(c) = &self.cgroup {
            push("--cgroup", c.clone().into());
        }
        if let Some(n) = &self.netns {
            push("--netns", n.clone().into());
        }
        push("--nofile", self.nofile.to_string().into());
        if let Some(f) = self.fsize {
            push("--fsize", f.to_string().into());
        }
        for (k, v) in &self.env {
            push("--env", format!("{k}={v}").into());
        }
        if self.userns {
            a.push("--userns".into());
        }
        a.push("--".into());
        a.push(self.exec.clone().into());
        a.extend(self.args.iter().cloned());
        a
    }
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, SpecError> {
    text.parse()
        .map_err(|_| bad(format!("{flag} {text}: not a number")))
}

fn device(name: &str) -> Result<Device, SpecError> {
    Device::ALL
        .into_iter()
        .find(|d| d.name() == name)
        .ok_or_else(|| {
            bad(format!(
                "--dev {name}: expected kvm, net-tun or userfaultfd"
            ))
        })
}

/// `SRC:DST`, split at the last ':' (so a source may hold one; a destination may not).
fn bind(value: &std::ffi::OsStr, read_only: bool) -> Result<Bind, SpecError> {
    let bytes = value.as_bytes();
    let colon = bytes.iter().rposition(|&b| b == b':').ok_or_else(|| {
        bad(format!(
            "bind {}: expected SRC:DST",
            value.to_string_lossy()
        ))
    })?;
    let src = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes[..colon]));
    let dst = std::ffi::OsStr::from_bytes(&bytes[colon + 1..]);
    let dst = inside(Path::new(dst))
        .map_err(|e| bad(format!("bind {}: {e}", value.to_string_lossy())))?;
    Ok(Bind {
        src,
        dst,
        read_only,
    })
}

/// A path inside the jail as a relative path with only normal components.
pub fn inside(p: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err("a path inside the jail may not hold '..'".into())
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err("names no file inside the jail".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn round_trips_through_the_command_line() {
        let a = args(
            "--id sb-1 --root /tmp --uid 1000 --gid 1000 --bind-ro /bin:/bin --bind /tmp:work \
             --dev kvm --nofile 512 --fsize 4096 --env A=b=c -- /bin/x --y z",
        );
        let s = Spec::parse(a).unwrap();
        assert_eq!(s.binds[0].dst, PathBuf::from("bin"));
        assert!(s.binds[0].read_only && !s.binds[1].read_only);
        assert_eq!(s.devices, vec![Device::Kvm]);
        assert_eq!(s.env, vec![("A".into(), "b=c".into())]);
        assert_eq!(s.args, args("--y z"));
        assert_eq!(Spec::parse(s.to_args()).unwrap(), s);
    }

    #[test]
    fn refuses_what_would_escape_or_run_privileged() {
        let base = "--id a --root /tmp --uid 7 --gid 7";
        for (extra, says) in [
            ("--bind /tmp:../x -- /p", "'..'"),
            ("-- /../p", "'..'"),
            ("--uid 0 -- /p", "must not be 0"),
            ("--dev mem -- /p", "expected kvm"),
            ("--cgroup /tmp -- /p", "not a cgroup"),
            ("--bind /no/such:x -- /p", "must exist"),
            ("--frob 1 -- /p", "unknown option"),
            ("", "no program"),
        ] {
            let e = Spec::parse(args(&format!("{base} {extra}"))).unwrap_err();
            assert!(e.0.contains(says), "{extra}: {e}");
        }
        let e = Spec::parse(args("--id a/b --root /tmp --uid 7 --gid 7 -- /p")).unwrap_err();
        assert!(e.0.contains("letters"), "{e}");
        let e = Spec::parse(args("--id a --root tmp --uid 7 --gid 7 -- /p")).unwrap_err();
        assert!(e.0.contains("absolute"), "{e}");
    }
}
