//! The shared libraries a dynamically linked VMM needs in its jail (as `ldd` lists
//! them: the loader and each `=> path`), found once per binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

pub fn needed(bin: &Path) -> Result<Vec<PathBuf>> {
    static SEEN: OnceLock<Mutex<HashMap<PathBuf, Vec<PathBuf>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(v) = seen.lock().unwrap().get(bin) {
        return Ok(v.clone());
    }
    let out = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(Error::host_io("cannot run ldd on", bin))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // A static binary: ldd says so and exits non-zero.
    let libs = if out.status.success() {
        parse(&text)
    } else {
        Vec::new()
    };
    seen.lock().unwrap().insert(bin.to_path_buf(), libs.clone());
    Ok(libs)
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)` lines; the vDSO has no file.
fn parse(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => l,
            };
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f80)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f81)\n";
        let v: Vec<String> = super::parse(text)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            v,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }
}
