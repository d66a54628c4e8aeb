//! `kiln --remote URL cp`: files and directory trees both ways, file by file through the
//! API's file routes (a directory is made with mkdir and walked with list), with the
//! local `kiln cp`'s semantics: the destination path is the copy's own path, modes kept.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use kiln::FileKind;
use kiln_server::client::Client;

use super::explain;
use crate::manage::{split, CpArgs};

pub fn cp(c: &Client, a: CpArgs) -> Result<i32> {
    let bytes = match (split(&a.src), split(&a.dst)) {
        ((None, local), (Some(id), remote)) => upload(c, id, Path::new(local), remote)
            .with_context(|| format!("copying {local} to {id}:{remote}"))?,
        ((Some(id), remote), (None, local)) => download(c, id, remote, Path::new(local))
            .with_context(|| format!("copying {id}:{remote} to {local}"))?,
        ((None, _), (None, _)) => bail!("one side must be in a sandbox: ID:/path"),
        _ => bail!("copying between two sandboxes is not supported; copy through the host"),
    };
    eprintln!("kiln: copied {bytes} bytes");
    Ok(0)
}

/// `dir/name` for a guest path (`/` + `a` is `/a`).
fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

fn upload(c: &Client, id: &str, local: &Path, remote: &str) -> Result<u64> {
    let meta =
        fs::symlink_metadata(local).with_context(|| format!("reading {}", local.display()))?;
    if meta.is_dir() {
        c.mkdir(id, remote).map_err(explain)?;
        let mut names: Vec<_> = fs::read_dir(local)
            .and_then(|d| d.map(|e| e.map(|e| e.file_name())).collect())
            .with_context(|| format!("listing {}", local.display()))?;
        names.sort();
        let mut total = 0;
        for name in names {
            let Some(n) = name.to_str() else {
                bail!("{}: file name is not UTF-8", local.join(&name).display());
            };
            total += upload(c, id, &local.join(n), &join(remote, n))?;
        }
        Ok(total)
    } else if meta.is_file() {
        // Streamed: the file is never held in memory, here or on the server.
        let mut f =
            fs::File::open(local).with_context(|| format!("reading {}", local.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        c.write_file_from(id, remote, &mut f, meta.len(), Some(mode))
            .map_err(explain)?;
        Ok(meta.len())
    } else {
        bail!(
            "{}: only files and directories can be copied",
            local.display()
        )
    }
}

fn download(c: &Client, id: &str, remote: &str, local: &Path) -> Result<u64> {
    let st = c.stat(id, remote).map_err(explain)?;
    match st.kind {
        FileKind::Dir => {
            fs::create_dir_all(local).with_context(|| format!("creating {}", local.display()))?;
            let mut total = 0;
            for e in c.list_dir(id, remote).map_err(explain)? {
                if matches!(e.stat.kind, FileKind::File | FileKind::Dir) {
                    total += download(c, id, &join(remote, &e.name), &local.join(&e.name))?;
                }
            }
            Ok(total)
        }
        FileKind::File => {
            // Streamed beside the target and renamed, so a failed copy leaves no half file.
            let name = local
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("download");
            let tmp = local.with_file_name(format!(".{name}.kiln-part"));
            let written = (|| -> Result<u64> {
                let mut f = fs::File::create(&tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?;
                let n = c.read_file_to(id, remote, &mut f).map_err(explain)?;
                f.set_permissions(fs::Permissions::from_mode(st.mode & 0o7777))?;
                f.sync_all()?;
                fs::rename(&tmp, local)?;
                Ok(n)
            })();
            if written.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            written.with_context(|| format!("writing {}", local.display()))
        }
        _ => bail!("{id}:{remote}: only files and directories can be copied"),
    }
}

#[cfg(test)]
mod tests {
    use super::join;

    #[test]
    fn guest_paths_join() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/work/", "a"), "/work/a");
        assert_eq!(join("/work", "a"), "/work/a");
    }
}
