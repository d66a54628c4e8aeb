//! The small requests: set_env, set_secret, ping, shutdown.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::time::Duration;

use kiln_proto::{ErrorReply, Reply};

use super::command::check_env;
use super::fsops::{finish, mkdir_p};
use super::routes::Op;
use super::sys::{errno_error, invalid, io_error, monotonic_ns};
use super::Context;

/// How long shutdown waits after its reply before powering off, so the reply
/// leaves the guest first.
const REPLY_GRACE: Duration = Duration::from_millis(50);

pub fn set_env(op: Op, env: BTreeMap<String, Option<String>>, ctx: &Context) {
    for (k, v) in &env {
        if let Err(e) = check_env(k, v.as_deref()) {
            return op.fail(e);
        }
    }
    ctx.update_env(env);
    op.finish(Reply::Done)
}

/// Whether `name` is a plain file name: `[A-Za-z0-9._-]+`, not `.` or `..`.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Writes `<secrets_dir>/<name>` (0600; the directory 0700). The value is never
/// logged or echoed in errors.
pub fn set_secret(op: Op, name: &str, value: &str, ctx: &Context) {
    if !valid_secret_name(name) {
        return op.fail(invalid(
            format!("bad secret name {name:?}: use letters, digits, '.', '_' and '-'"),
            None,
        ));
    }
    let dir = &ctx.secrets_dir;
    let path = dir.join(name);
    let shown = path.to_string_lossy().into_owned();
    let result = (|| -> Result<Reply, ErrorReply> {
        let dir_shown = dir.to_string_lossy();
        if let Some(parent) = dir.parent() {
            mkdir_p(parent, 0o755).map_err(|e| errno_error(e, "mkdir", &dir_shown))?;
        }
        mkdir_p(dir, 0o700).map_err(|e| errno_error(e, "mkdir", &dir_shown))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error(&e, "chmod", &dir_shown))?;
        let tmp = dir.join(format!(".{name}.kiln-tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(value.as_bytes())?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error(&e, "write secret", &shown)
        })?;
        Ok(Reply::Done)
    })();
    finish(op, result)
}

pub fn ping(op: Op) {
    op.finish(Reply::Pong {
        agent_ns: monotonic_ns(),
    })
}

/// Syncs, answers `Done`, then powers off (or reboots). If that fails the agent
/// keeps serving (the failure is on the console).
pub fn shutdown(op: Op, reboot: bool, ctx: &Context) {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    op.finish(Reply::Done);
    std::thread::sleep(REPLY_GRACE);
    ctx.power(reboot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for ok in ["token", "API_KEY", "a.b-c_d", "..x", "x.."] {
            assert!(valid_secret_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "/etc/passwd", "a b", "é", "a\0"] {
            assert!(!valid_secret_name(bad), "{bad:?}");
        }
    }
}
