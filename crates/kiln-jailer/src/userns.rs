//! A user namespace of the caller's own, for a jail built without root: the caller's
//! uid and gid are mapped to themselves (nothing else is; no helper binary is needed),
//! which gives this process the capabilities to make the other namespaces and mounts
//! inside it and no power over anything the host's namespace owns.

use crate::sys::{check, step, Step};

pub fn enter(uid: u32, gid: u32) -> Step {
    // SAFETY: unshare takes flags only.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    check(ret.into()).map_err(step(
        "create a user namespace (are unprivileged user namespaces allowed? see \
         /proc/sys/user/max_user_namespaces)",
    ))?;
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text)
            .map_err(step(format!("write /proc/self/{file}")))
    };
    // setgroups must be denied before an unprivileged process may write gid_map.
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{uid} {uid} 1\n"))?;
    write("gid_map", format!("{gid} {gid} 1\n"))
}
