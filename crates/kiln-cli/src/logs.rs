//! `kiln logs ID [--vmm] [-f]`: the guest console (or the VMM's log) of a sandbox.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use kiln::Sandbox;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The sandbox.
    pub id: String,
    /// The VMM's log (vmm.log) instead of the guest console.
    #[arg(long)]
    pub vmm: bool,
    /// Keep printing what is appended until the sandbox stops (or Ctrl-C).
    #[arg(short = 'f', long)]
    pub follow: bool,
}

pub fn logs(a: LogsArgs) -> Result<i32> {
    let sb = Sandbox::get(&a.id)?;
    let dir = sb.dir().to_path_buf();
    if let Some(e) = kiln::boot_error::read(&dir.join("boot-error.json")) {
        eprintln!("kiln: boot error at {}: {}", e.stage, e.message);
    }
    let path = dir.join(if a.vmm { "vmm.log" } else { "console.log" });
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !a.follow => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        f.read_to_end(&mut buf)?;
        out.write_all(&buf)?;
        out.flush()?;
        if !a.follow {
            return Ok(0);
        }
        if buf.is_empty() {
            if !matches!(
                sb.state(),
                kiln::State::Running | kiln::State::Paused | kiln::State::Creating
            ) {
                return Ok(0);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // A log rotated or truncated under us: start over.
        let pos = f.stream_position()?;
        if std::fs::metadata(&path).is_ok_and(|m| m.len() < pos) {
            f.seek(SeekFrom::Start(0))?;
        }
    }
}
