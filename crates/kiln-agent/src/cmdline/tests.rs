//! The kernel command line parser: every directive, bad values, and arbitrary bytes.

use super::*;

fn p(s: &str) -> Vec<Directive> {
    parse(s.as_bytes())
}

fn bad(key: &str, value: &str) -> Directive {
    Directive::Bad {
        key: key.into(),
        value: value.into(),
    }
}

fn mount(dev: &str, dir: &str, read_only: bool, fstype: &str) -> Directive {
    Directive::Mount(MountSpec {
        dev: dev.into(),
        dir: dir.into(),
        read_only,
        fstype: fstype.into(),
    })
}

#[test]
fn ignores_other_and_unknown_params() {
    assert!(p("").is_empty());
    assert!(p("console=ttyS0 reboot=k panic=1 quiet kiln.unknown=1 kiln init=/x").is_empty());
    assert!(p("  \n kiln.reportx=1 xkiln.report=1\n").is_empty());
}

#[test]
fn poweroff_by_reboot() {
    assert_eq!(p("kiln.poweroff=reboot"), vec![Directive::PoweroffByReboot]);
    assert_eq!(p("kiln.poweroff=halt"), vec![bad("kiln.poweroff", "halt")]);
    assert_eq!(p("kiln.poweroff"), vec![bad("kiln.poweroff", "")]);
}

#[test]
fn report() {
    assert_eq!(p("kiln.report=1"), vec![Directive::Report]);
    assert_eq!(p("kiln.report"), vec![Directive::Report]);
    assert!(p("kiln.report=0").is_empty());
    assert_eq!(p("kiln.report=yes"), vec![bad("kiln.report", "yes")]);
    // /proc/cmdline ends with a newline.
    assert_eq!(p("quiet kiln.report=1\n"), vec![Directive::Report]);
}

#[test]
fn mount_with_and_without_fstype() {
    assert_eq!(
        p("kiln.mount=/dev/vda,/mnt/root,ro"),
        vec![mount("/dev/vda", "/mnt/root", true, "ext4")]
    );
    assert_eq!(
        p("kiln.mount=none,/mnt/scratch,rw,tmpfs"),
        vec![mount("none", "/mnt/scratch", false, "tmpfs")]
    );
    assert_eq!(
        p("kiln.mount=/dev/vdb,/mnt/my%20disk,rw"),
        vec![mount("/dev/vdb", "/mnt/my disk", false, "ext4")]
    );
}

#[test]
fn malformed_mounts() {
    for v in [
        "",
        "/dev/vda",
        "/dev/vda,/mnt",
        "/dev/vda,/mnt,rx",
        "/dev/vda,/mnt,RO",
        "/dev/vda,/mnt,ro,",
        "/dev/vda,/mnt,ro,ext4,extra",
        ",/mnt,ro",
        "/dev/vda,,ro",
        "/dev/vda,/mnt%00x,ro",
    ] {
        assert_eq!(
            p(&format!("kiln.mount={v}")),
            vec![bad("kiln.mount", v)],
            "{v}"
        );
    }
    assert_eq!(p("kiln.mount"), vec![bad("kiln.mount", "")]);
}

#[test]
fn cat() {
    assert_eq!(
        p("kiln.cat=/proc/version"),
        vec![Directive::Cat("/proc/version".into())]
    );
    assert_eq!(
        p("kiln.cat=/tmp/a%20b"),
        vec![Directive::Cat("/tmp/a b".into())]
    );
    assert_eq!(p("kiln.cat="), vec![bad("kiln.cat", "")]);
    assert_eq!(p("kiln.cat"), vec![bad("kiln.cat", "")]);
    assert_eq!(p("kiln.cat=%00"), vec![bad("kiln.cat", "%00")]);
}

#[test]
fn write_decodes_spaces_and_keeps_commas() {
    assert_eq!(
        p("kiln.write=/tmp/f,hello%20world,again"),
        vec![Directive::Write {
            path: "/tmp/f".into(),
            data: b"hello world,again".to_vec(),
        }]
    );
    assert_eq!(
        p("kiln.write=/tmp/empty,"),
        vec![Directive::Write {
            path: "/tmp/empty".into(),
            data: Vec::new(),
        }]
    );
    // `=` in the text stays: only the first `=` separates key and value.
    assert_eq!(
        p("kiln.write=/tmp/kv,a=b"),
        vec![Directive::Write {
            path: "/tmp/kv".into(),
            data: b"a=b".to_vec(),
        }]
    );
    assert_eq!(p("kiln.write=/tmp/f"), vec![bad("kiln.write", "/tmp/f")]);
    assert_eq!(p("kiln.write=,text"), vec![bad("kiln.write", ",text")]);
}

#[test]
fn quoted_values_may_contain_spaces() {
    assert_eq!(
        p(r#"quiet kiln.write="/tmp/q,a b  c" kiln.report=1"#),
        vec![
            Directive::Write {
                path: "/tmp/q".into(),
                data: b"a b  c".to_vec(),
            },
            Directive::Report,
        ]
    );
    assert_eq!(
        p(r#""kiln.cat=/tmp/x y""#),
        vec![Directive::Cat("/tmp/x y".into())]
    );
}

#[test]
fn percent_decoding() {
    assert_eq!(decode(b"a%20b"), b"a b");
    assert_eq!(decode(b"%2c%2C%25"), b",,%");
    assert_eq!(decode(b"100%"), b"100%");
    assert_eq!(decode(b"%2"), b"%2");
    assert_eq!(decode(b"%zz%20"), b"%zz ");
    assert_eq!(decode(b"%2520"), b"%20", "decodes once");
    assert_eq!(decode(b"%ff"), [0xff]);
}

#[test]
fn actions_last_one_wins_in_order() {
    assert_eq!(
        p("kiln.action=poweroff kiln.action=reboot kiln.action=panic kiln.action=wait"),
        vec![
            Directive::Action(Action::Poweroff),
            Directive::Action(Action::Reboot),
            Directive::Action(Action::Panic),
            Directive::Action(Action::Wait),
        ]
    );
    assert_eq!(p("kiln.action=halt"), vec![bad("kiln.action", "halt")]);
    assert_eq!(Action::default(), Action::Wait);
}

#[test]
fn verbose() {
    assert_eq!(p("kiln.verbose"), vec![Directive::Verbose]);
    assert_eq!(p("kiln.verbose=1"), vec![Directive::Verbose]);
    assert!(p("kiln.verbose=0").is_empty());
    assert_eq!(p("kiln.verbose=2"), vec![bad("kiln.verbose", "2")]);
}

#[test]
fn root_and_overlay_devices() {
    assert_eq!(
        p("console=ttyS0 kiln.root=/dev/vda kiln.overlay=/dev/vdb"),
        vec![
            Directive::Root("/dev/vda".into()),
            Directive::Overlay("/dev/vdb".into()),
        ]
    );
    assert_eq!(
        p("kiln.root=/dev/disk%20one"),
        vec![Directive::Root("/dev/disk one".into())]
    );
    assert_eq!(p("kiln.root="), vec![bad("kiln.root", "")]);
    assert_eq!(p("kiln.root"), vec![bad("kiln.root", "")]);
    assert_eq!(p("kiln.overlay=%00"), vec![bad("kiln.overlay", "%00")]);
    assert_eq!(p("kiln.overlay"), vec![bad("kiln.overlay", "")]);
}

#[test]
fn hostname() {
    assert_eq!(
        p("kiln.hostname=sb-42.example"),
        vec![Directive::Hostname("sb-42.example".into())]
    );
    let longest = "h".repeat(64);
    assert_eq!(
        p(&format!("kiln.hostname={longest}")),
        vec![Directive::Hostname(longest)]
    );
    let too_long = "h".repeat(65);
    for v in ["", "a%20b", "a/b", "a_b", "%41", too_long.as_str()] {
        assert_eq!(
            p(&format!("kiln.hostname={v}")),
            vec![bad("kiln.hostname", v)],
            "{v:?}"
        );
    }
    assert_eq!(p("kiln.hostname"), vec![bad("kiln.hostname", "")]);
}

#[test]
fn repeated_keys_keep_command_line_order() {
    assert_eq!(
        p("kiln.cat=/a kiln.write=/b,x kiln.cat=/b kiln.mount=bogus kiln.cat=/c"),
        vec![
            Directive::Cat("/a".into()),
            Directive::Write {
                path: "/b".into(),
                data: b"x".to_vec(),
            },
            Directive::Cat("/b".into()),
            bad("kiln.mount", "bogus"),
            Directive::Cat("/c".into()),
        ]
    );
}

#[test]
fn never_panics_on_odd_input() {
    for s in [
        &b"\""[..],
        b"\"\"",
        b"kiln.cat=\"",
        b"=",
        b"kiln.write==",
        b"kiln.mount=,,,",
        b"kiln.cat=\xff\xfe",
        b"\0kiln.report=1\0",
        b"kiln.write=/x,%",
        b"kiln.write=/x,%%%",
    ] {
        let _ = parse(s);
    }
    assert_eq!(parse(b"\0kiln.report=1\0"), vec![Directive::Report]);
}

#[test]
fn net() {
    let spec = crate::net::NetSpec::parse("169.254.0.2/30,169.254.0.1").unwrap();
    assert_eq!(
        p("kiln.net=169.254.0.2/30,169.254.0.1"),
        vec![Directive::Net(spec)]
    );
    assert_eq!(
        p("kiln.net=169.254.0.2/30,10.0.0.1"),
        vec![bad("kiln.net", "169.254.0.2/30,10.0.0.1")]
    );
    assert_eq!(p("kiln.net"), vec![bad("kiln.net", "")]);
}
