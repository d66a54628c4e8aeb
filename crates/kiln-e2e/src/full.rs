//! A small filesystem of its own for a state directory, that a test can fill to the
//! last byte: a tmpfs of a given size mounted under the temp dir (root only), with the
//! state directory `state/` and a filler file `fill` beside it. Unmounted on drop.

use std::io::Write;
use std::path::PathBuf;

pub struct SmallFs {
    pub mnt: PathBuf,
    /// The state directory inside it.
    pub state: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB; panics with what to do if it cannot.
    pub fn new(name: &str, mib: u64) -> SmallFs {
        let mnt = std::env::temp_dir().join(format!(
            "kiln-e2e-full-{}-{name}-{}",
            std::process::id(),
            crate::unique()
        ));
        std::fs::create_dir_all(&mnt).expect("create the mount point");
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&mnt)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "cannot mount a tmpfs at {} (run as root)",
            mnt.display()
        );
        let state = mnt.join("state");
        std::fs::create_dir(&state).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        SmallFs { mnt, state }
    }

    /// Writes the filler until the filesystem is full (ENOSPC).
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.mnt.join("fill"))
            .unwrap();
        let block = vec![0x5au8; 64 << 10];
        loop {
            if let Err(e) = f.write_all(&block) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
        // The last bytes, below a block.
        while f.write_all(&[0]).is_ok() {}
        assert_eq!(self.free(), 0, "the filesystem is not full");
    }

    /// Removes the filler.
    pub fn unfill(&self) {
        let _ = std::fs::remove_file(self.mnt.join("fill"));
    }

    /// Bytes free.
    pub fn free(&self) -> u64 {
        kiln::store::reserve::free_bytes(&self.mnt).unwrap()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Whatever a failed test left running there goes with the state directory.
        for (pid, _) in crate::cli::processes_under(&self.state) {
            crate::cli::kill9(pid);
        }
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .status();
        let _ = std::fs::remove_dir(&self.mnt);
    }
}
