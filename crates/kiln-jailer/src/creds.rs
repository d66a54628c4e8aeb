//! Dropping to the jail's own unprivileged uid/gid, for good.

use crate::sys::{check, step, Step};

/// No supplementary groups (when `clear_groups`: a user namespace denies setgroups and
/// keeps the caller's, which open `/dev/kvm`), then gid, then uid (real, effective and
/// saved), so no way back remains. Checked afterwards. In a user namespace the uid does
/// not change, and the capabilities it gave go at exec (the program has no file
/// capabilities and the uid is not 0).
pub fn drop_to(uid: u32, gid: u32, clear_groups: bool) -> Step {
    let what = || format!("drop to uid {uid} gid {gid}");
    // SAFETY: plain integer arguments; a null list with size 0 clears the groups.
    unsafe {
        if clear_groups {
            check(libc::setgroups(0, std::ptr::null()).into()).map_err(step(what()))?;
        }
        check(libc::setresgid(gid, gid, gid).into()).map_err(step(what()))?;
        check(libc::setresuid(uid, uid, uid).into()).map_err(step(what()))?;
    }
    // SAFETY: getters without arguments.
    let (u, g) = unsafe { (libc::geteuid(), libc::getegid()) };
    // SAFETY: as above; this must fail now.
    let regained = unsafe { libc::setuid(0) } == 0;
    if u != uid || g != gid || regained {
        return Err(step(what())(std::io::Error::other(
            "the credentials did not change for good",
        )));
    }
    Ok(())
}

/// PR_SET_NO_NEW_PRIVS: nothing the program execs can gain privileges.
pub fn no_new_privs() -> Step {
    // SAFETY: prctl with integer arguments.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(ret.into())
        .map(drop)
        .map_err(step("set no_new_privs"))
}

/// The jailed process dies with its supervisor (set after the uid change, which
/// clears it).
pub fn die_with_parent() -> Step {
    // SAFETY: prctl with integer arguments.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    check(ret.into())
        .map(drop)
        .map_err(step("set the parent-death signal"))
}
