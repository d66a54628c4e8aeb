use super::*;

fn decode(bytes: &[u8]) -> Result<Option<MuxFrame>, MuxError> {
    read_mux_frame(&mut &bytes[..])
}

fn header(stream: u32, kind: u8, len: u32) -> Vec<u8> {
    let mut h = stream.to_le_bytes().to_vec();
    h.push(kind);
    h.extend_from_slice(&len.to_le_bytes());
    h
}

#[test]
fn every_kind_round_trips() {
    let frames = [
        MuxFrame::listen(1024),
        MuxFrame::open(7, 1024),
        MuxFrame::accept(7),
        MuxFrame::data(7, b"hello"),
        MuxFrame::data(7, &vec![0xa5; MUX_MAX_PAYLOAD]),
        MuxFrame::eof(7),
        MuxFrame::reset(u32::MAX),
    ];
    let mut wire = Vec::new();
    for f in &frames {
        write_mux_frame(&mut wire, f).unwrap();
    }
    let mut r = &wire[..];
    for f in &frames {
        assert_eq!(read_mux_frame(&mut r).unwrap().as_ref(), Some(f));
    }
    assert!(read_mux_frame(&mut r).unwrap().is_none());
    assert_eq!(MuxFrame::open(3, 99).port(), Some(99));
    assert_eq!(MuxFrame::listen(5).port(), Some(5));
    assert_eq!(MuxFrame::eof(3).port(), None);
}

#[test]
fn the_header_layout_is_stream_kind_len() {
    let wire = MuxFrame::data(0x0102_0304, b"ab").encode();
    assert_eq!(wire, [4, 3, 2, 1, 4, 2, 0, 0, 0, b'a', b'b']);
}

#[test]
fn oversize_lengths_fail_before_allocating() {
    let e = decode(&header(1, MuxKind::Data as u8, u32::MAX)).unwrap_err();
    assert!(
        matches!(e, MuxError::BadLength { len, .. } if len == u64::from(u32::MAX)),
        "{e}"
    );
    let e = decode(&header(1, MuxKind::Data as u8, MUX_MAX_PAYLOAD as u32 + 1)).unwrap_err();
    assert!(matches!(e, MuxError::BadLength { .. }), "{e}");
}

#[test]
fn payloads_must_fit_their_kind() {
    for (kind, len) in [
        (MuxKind::Open, 0),
        (MuxKind::Open, 5),
        (MuxKind::Accept, 1),
        (MuxKind::Eof, 4),
        (MuxKind::Reset, 2),
        (MuxKind::Data, 0),
    ] {
        let mut wire = header(1, kind as u8, len);
        wire.extend(vec![0; len as usize]);
        assert!(
            matches!(decode(&wire), Err(MuxError::BadLength { .. })),
            "{kind:?} with {len} bytes"
        );
    }
}

#[test]
fn listen_is_on_stream_zero_and_nothing_else_is() {
    let mut wire = header(3, MuxKind::Listen as u8, 4);
    wire.extend(1024u32.to_le_bytes());
    assert!(matches!(decode(&wire), Err(MuxError::BadStream { .. })));
    assert!(matches!(
        decode(&header(0, MuxKind::Eof as u8, 0)),
        Err(MuxError::BadStream { .. })
    ));
    let bad = MuxFrame {
        stream: 0,
        kind: MuxKind::Accept,
        payload: vec![],
    };
    assert!(write_mux_frame(&mut Vec::new(), &bad).is_err());
    let empty = MuxFrame::data(1, b"");
    assert!(write_mux_frame(&mut Vec::new(), &empty).is_err());
}

#[test]
fn unknown_kinds_and_truncation_are_errors() {
    assert!(matches!(
        decode(&header(1, 0, 0)),
        Err(MuxError::UnknownKind(0))
    ));
    assert!(matches!(
        decode(&header(1, 200, 0)),
        Err(MuxError::UnknownKind(200))
    ));
    assert!(matches!(decode(&[1, 0, 0]), Err(MuxError::Truncated)));
    let mut wire = header(1, MuxKind::Data as u8, 10);
    wire.extend(b"short");
    assert!(matches!(decode(&wire), Err(MuxError::Truncated)));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap xorshift fuzz: every outcome is a frame, the end, or an error.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2000 {
        let mut buf = Vec::new();
        for _ in 0..(seed % 40) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            buf.push(seed as u8);
        }
        let mut r = &buf[..];
        while let Ok(Some(_)) = read_mux_frame(&mut r) {}
        seed = seed.wrapping_add(1);
    }
}
