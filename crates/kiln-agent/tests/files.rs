//! Files and metadata through the server on the host (no VM): transfers, tree
//! operations and their error kinds, secrets, ping, shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kiln_agent::server::Waiter;
use kiln_proto::{ErrorKind, FileKind, Kind, Reply, Request, CHUNK, FLAG_EOF};

fn agent_for(name: &str) -> Agent {
    agent(Waiter::PerPid, name)
}

// --- files --------------------------------------------------------------------

fn write_file(
    c: &mut Client,
    id: u32,
    path: &str,
    data: &[u8],
    mode: Option<u32>,
    parents: bool,
) -> Reply {
    c.request(
        id,
        &Request::WriteFile {
            path: path.into(),
            mode,
            parents,
        },
    );
    for chunk in data.chunks(CHUNK) {
        c.send(Kind::DataIn, 0, id, chunk);
    }
    c.send(Kind::DataIn, FLAG_EOF, id, &[]);
    let (got, r) = c.reply();
    assert_eq!(got, id);
    r
}

fn read_file(
    c: &mut Client,
    id: u32,
    path: &str,
) -> Result<(u64, u32, Vec<u8>), kiln_proto::ErrorReply> {
    c.request(id, &Request::ReadFile { path: path.into() });
    let (size, mode) = match c.reply() {
        (_, Reply::FileStart { size, mode }) => (size, mode),
        (_, Reply::Error(e)) => return Err(e),
        r => panic!("{r:?}"),
    };
    let mut data = Vec::new();
    loop {
        let f = c.recv();
        assert_eq!((f.kind, f.id), (Kind::DataOut, id), "{f:?}");
        assert!(f.payload.len() <= CHUNK);
        data.extend(&f.payload);
        if f.eof() {
            break;
        }
    }
    assert_eq!(c.reply(), (id, Reply::Done));
    Ok((size, mode, data))
}

#[test]
fn binary_files_round_trip() {
    let a = agent_for("files");
    let dir = scratch("files");
    let mut c = a.connect();
    let data: Vec<u8> = (0..3_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = format!("{}/deep/er/blob.bin", dir.display());
    assert_eq!(
        write_file(&mut c, 1, &path, &data, Some(0o640), true),
        Reply::Written {
            bytes: data.len() as u64
        }
    );
    let (size, mode, back) = read_file(&mut c, 2, &path).unwrap();
    assert_eq!((size, mode), (data.len() as u64, 0o640));
    assert!(back == data);
    // Replacing keeps it whole; the default mode is 0644; no temp files remain.
    assert_eq!(
        write_file(&mut c, 3, &path, b"", None, false),
        Reply::Written { bytes: 0 }
    );
    let (size, mode, back) = read_file(&mut c, 4, &path).unwrap();
    assert_eq!((size, mode, back.len()), (0, 0o644, 0));
    let names: Vec<_> = std::fs::read_dir(dir.join("deep/er"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["blob.bin"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn file_operations_and_their_error_kinds() {
    let a = agent_for("fsops");
    let dir = scratch("fsops");
    let d = dir.display().to_string();
    let mut c = a.connect();
    let p = |s: &str| format!("{d}/{s}");

    assert_eq!(
        c.call(
            1,
            &Request::Mkdir {
                path: p("a/b/c"),
                parents: true,
                mode: None
            }
        ),
        Reply::Done
    );
    assert_eq!(
        c.call(
            2,
            &Request::Mkdir {
                path: p("a/b/c"),
                parents: true,
                mode: None
            }
        ),
        Reply::Done,
        "mkdir -p of an existing dir"
    );
    let e = c.call_err(
        3,
        &Request::Mkdir {
            path: p("a/b/c"),
            parents: false,
            mode: None,
        },
    );
    assert_kind(&e, ErrorKind::AlreadyExists, Some(&p("a/b/c")));
    let e = c.call_err(
        4,
        &Request::Mkdir {
            path: p("x/y"),
            parents: false,
            mode: None,
        },
    );
    assert_kind(&e, ErrorKind::NotFound, Some(&p("x/y")));
    assert_eq!(
        c.call(
            5,
            &Request::Mkdir {
                path: p("m"),
                parents: false,
                mode: Some(0o700)
            }
        ),
        Reply::Done
    );

    assert!(matches!(
        write_file(&mut c, 6, &p("a/f.txt"), b"hello", None, false),
        Reply::Written { bytes: 5 }
    ));
    std::os::unix::fs::symlink("f.txt", dir.join("a/link")).unwrap();
    match c.call(7, &Request::Stat { path: p("a/f.txt") }) {
        Reply::Stat(s) => {
            assert_eq!((s.kind, s.size, s.mode), (FileKind::File, 5, 0o644));
            assert!(s.mtime > 0);
        }
        r => panic!("{r:?}"),
    }
    match c.call(8, &Request::Stat { path: p("m") }) {
        Reply::Stat(s) => assert_eq!((s.kind, s.mode), (FileKind::Dir, 0o700)),
        r => panic!("{r:?}"),
    }
    match c.call(9, &Request::ListDir { path: p("a") }) {
        Reply::Entries { entries } => {
            let got: Vec<_> = entries
                .iter()
                .map(|e| (e.name.as_str(), e.stat.kind))
                .collect();
            assert_eq!(
                got,
                [
                    ("b", FileKind::Dir),
                    ("f.txt", FileKind::File),
                    ("link", FileKind::Symlink)
                ]
            );
        }
        r => panic!("{r:?}"),
    }

    // Errors carry the kind and the path.
    let e = c.call_err(10, &Request::Stat { path: p("missing") });
    assert_kind(&e, ErrorKind::NotFound, Some(&p("missing")));
    let e = read_file(&mut c, 11, &p("a")).unwrap_err();
    assert_kind(&e, ErrorKind::IsADirectory, Some(&p("a")));
    let e = read_file(&mut c, 12, &p("nope")).unwrap_err();
    assert_kind(&e, ErrorKind::NotFound, Some(&p("nope")));
    let e = c.call_err(13, &Request::ListDir { path: p("a/f.txt") });
    assert_kind(&e, ErrorKind::NotADirectory, Some(&p("a/f.txt")));
    match write_file(&mut c, 14, &p("a/f.txt/child"), b"x", None, true) {
        Reply::Error(e) => assert_kind(&e, ErrorKind::NotADirectory, Some(&p("a/f.txt/child"))),
        r => panic!("{r:?}"),
    }
    match write_file(&mut c, 15, &p("no/dir/f"), b"x", None, false) {
        Reply::Error(e) => assert_kind(&e, ErrorKind::NotFound, Some(&p("no/dir/f"))),
        r => panic!("{r:?}"),
    }
    match write_file(&mut c, 16, &p("a/b"), b"x", None, false) {
        Reply::Error(e) => assert_kind(&e, ErrorKind::IsADirectory, Some(&p("a/b"))),
        r => panic!("{r:?}"),
    }
    let e = c.call_err(
        17,
        &Request::Stat {
            path: String::new(),
        },
    );
    assert_eq!(e.kind, ErrorKind::InvalidInput);

    // Rename and remove.
    assert_eq!(
        c.call(
            18,
            &Request::Rename {
                from: p("a/f.txt"),
                to: p("a/g.txt")
            }
        ),
        Reply::Done
    );
    let e = c.call_err(
        19,
        &Request::Rename {
            from: p("a/f.txt"),
            to: p("a/h.txt"),
        },
    );
    assert_kind(&e, ErrorKind::NotFound, Some(&p("a/f.txt")));
    let e = c.call_err(
        20,
        &Request::Remove {
            path: p("a"),
            recursive: false,
        },
    );
    assert_kind(&e, ErrorKind::DirectoryNotEmpty, Some(&p("a")));
    assert_eq!(
        c.call(
            21,
            &Request::Remove {
                path: p("a/link"),
                recursive: false
            }
        ),
        Reply::Done
    );
    assert!(
        dir.join("a/g.txt").exists(),
        "removing a symlink leaves its target"
    );
    assert_eq!(
        c.call(
            22,
            &Request::Remove {
                path: p("a"),
                recursive: true
            }
        ),
        Reply::Done
    );
    let e = c.call_err(
        23,
        &Request::Remove {
            path: p("a"),
            recursive: true,
        },
    );
    assert_kind(&e, ErrorKind::NotFound, Some(&p("a")));
    assert_eq!(
        c.call_err(
            24,
            &Request::Remove {
                path: "/".into(),
                recursive: true
            }
        )
        .kind,
        ErrorKind::InvalidInput
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_write_answers_at_once_and_drops_the_rest_of_its_data() {
    let a = agent_for("failed-write");
    let dir = scratch("failed-write");
    let mut c = a.connect();
    let path = format!("{}/missing/f", dir.display());
    c.request(
        1,
        &Request::WriteFile {
            path: path.clone(),
            mode: None,
            parents: false,
        },
    );
    // The error comes before any data is sent.
    let (id, e) = c.error_reply();
    assert_eq!(id, 1);
    assert_kind(&e, ErrorKind::NotFound, Some(&path));
    for _ in 0..8 {
        c.send(Kind::DataIn, 0, 1, &[0u8; CHUNK]);
    }
    c.send(Kind::DataIn, FLAG_EOF, 1, &[]);
    // Nothing answers the dropped data; the id is free again.
    assert!(matches!(c.call(1, &Request::Ping), Reply::Pong { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- metadata -----------------------------------------------------------------

#[test]
fn secrets_are_private_files_with_plain_names() {
    use std::os::unix::fs::PermissionsExt;
    let a = agent_for("secrets");
    let mut c = a.connect();
    let req = |name: &str| Request::SetSecret {
        name: name.into(),
        value: "s3cr3t".into(),
    };
    assert_eq!(c.call(1, &req("api.key")), Reply::Done);
    let f = a.secrets.join("api.key");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "s3cr3t");
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&a.secrets).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for bad in ["../x", "a/b", "", ".."] {
        let e = c.call_err(2, &req(bad));
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{bad:?}");
        assert!(!e.message.contains("s3cr3t"));
    }
}

#[test]
fn ping_and_shutdown() {
    let a = agent_for("shutdown");
    let mut c = a.connect();
    let n1 = match c.call(1, &Request::Ping) {
        Reply::Pong { agent_ns } => agent_ns,
        r => panic!("{r:?}"),
    };
    let n2 = match c.call(2, &Request::Ping) {
        Reply::Pong { agent_ns } => agent_ns,
        r => panic!("{r:?}"),
    };
    assert!(n2 >= n1);
    assert_eq!(c.call(3, &Request::Shutdown { reboot: false }), Reply::Done);
    assert_eq!(c.call(4, &Request::Shutdown { reboot: true }), Reply::Done);
    let t = Instant::now();
    while a.power_calls.lock().unwrap().len() < 2 {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut calls = a.power_calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, [false, true]);
}

#[test]
fn a_listing_too_large_for_a_frame_is_an_error_not_a_dead_connection() {
    let a = agent_for("big-listing");
    let dir = scratch("big-listing");
    // ~100 bytes of JSON per entry: 15000 entries are over the 1 MiB frame limit.
    for i in 0..15_000 {
        std::fs::write(dir.join(format!("file-with-a-longish-name-{i:06}")), b"").unwrap();
    }
    let mut c = a.connect();
    let e = c.call_err(
        1,
        &Request::ListDir {
            path: dir.display().to_string(),
        },
    );
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(e.message.contains("frame limit"), "{e:?}");
    assert!(matches!(c.call(2, &Request::Ping), Reply::Pong { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}
