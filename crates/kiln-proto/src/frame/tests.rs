use super::*;
use crate::{Exec, Reply, Request};

fn roundtrip(frame: &Frame) {
    let bytes = frame.encode();
    let got = read_frame(&mut &bytes[..]).unwrap().unwrap();
    assert_eq!(&got, frame);
    let mut d = Decoder::new();
    for b in &bytes {
        d.push(std::slice::from_ref(b));
    }
    assert_eq!(d.next_frame().unwrap().as_ref(), Some(frame));
    assert_eq!(d.pending(), 0);
}

#[test]
fn frames_round_trip_binary_payloads() {
    let all: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    roundtrip(&Frame::new(Kind::DataIn, 7, all));
    roundtrip(&Frame::new(Kind::Stdout, u32::MAX, Vec::new()));
    let mut f = Frame::new(Kind::DataOut, 3, vec![0; MAX_PAYLOAD]);
    f.flags = FLAG_EOF;
    roundtrip(&f);
    let req = Request::Exec(Exec {
        argv: vec!["echo".into(), "héllo\n".into()],
        ..Default::default()
    });
    let f = Frame::json(Kind::Request, 9, &req);
    roundtrip(&f);
    assert_eq!(f.parse::<Request>().unwrap(), req);
}

#[test]
fn clean_eof_between_frames_is_none_inside_is_truncated() {
    assert!(read_frame(&mut &[][..]).unwrap().is_none());
    let bytes = Frame::new(Kind::Stdout, 1, b"abc".to_vec()).encode();
    for cut in 1..bytes.len() {
        let err = read_frame(&mut &bytes[..cut]).unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "cut {cut}: {err}");
    }
}

#[test]
fn oversized_and_reserved_headers_are_refused_and_unrecoverable() {
    let mut h = header(Kind::DataIn, 0, 1, 0);
    h[0..4].copy_from_slice(&((MAX_PAYLOAD as u32) + 1).to_le_bytes());
    let err = read_frame(&mut &h[..]).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }) && !err.is_recoverable());
    let mut d = Decoder::new();
    d.push(&h);
    assert!(d.next_frame().is_err());
    d.push(&Frame::new(Kind::Stdout, 1, vec![]).encode());
    assert!(d.next_frame().is_err(), "decoder stays failed");

    let mut h = header(Kind::DataIn, 0, 1, 0);
    h[6] = 1;
    assert!(matches!(
        read_frame(&mut &h[..]).unwrap_err(),
        FrameError::Reserved(_)
    ));
    let mut h = header(Kind::DataIn, 0, 1, 0);
    h[5] = 0x80;
    assert!(read_frame(&mut &h[..]).is_err());
}

#[test]
fn unknown_kind_is_skipped_and_the_stream_continues() {
    let mut bytes = Frame::new(Kind::Stdout, 5, b"xyz".to_vec()).encode();
    bytes[4] = 99;
    let next = Frame::new(Kind::Stderr, 6, b"ok".to_vec());
    bytes.extend(next.encode());
    let mut r = &bytes[..];
    let err = read_frame(&mut r).unwrap_err();
    assert!(matches!(err, FrameError::UnknownKind { kind: 99, id: 5 }));
    assert!(err.is_recoverable());
    assert_eq!(read_frame(&mut r).unwrap().unwrap(), next);

    let mut d = Decoder::new();
    d.push(&bytes);
    assert!(d.next_frame().unwrap_err().is_recoverable());
    assert_eq!(d.next_frame().unwrap().unwrap(), next);
}

#[test]
fn bad_json_is_a_parse_error_not_a_panic() {
    let f = Frame::new(Kind::Request, 1, b"{\"op\":\"exec\",\"argv\":3}".to_vec());
    assert!(f.parse::<Request>().is_err());
    let f = Frame::new(Kind::Request, 1, b"{\"op\":\"nope\"}".to_vec());
    assert!(f.parse::<Request>().is_err());
    let f = Frame::new(Kind::Reply, 1, vec![0xff, 0xfe]);
    assert!(f.parse::<Reply>().is_err());
}

/// The fuzz target's property, run over pseudo-random inputs in every `cargo test`:
/// the decoder never panics and never yields a frame larger than the limit.
#[test]
fn decoder_survives_random_input() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let len = (next() % 200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if next() % 2 == 0 && bytes.len() >= HEADER_LEN {
            // Plausible header: small length, known kind, no reserved bits.
            bytes[0..4].copy_from_slice(&((next() % 64) as u32).to_le_bytes());
            bytes[4] = (next() % 10) as u8;
            bytes[5] &= 1;
            bytes[6] = 0;
            bytes[7] = 0;
        }
        crate::frame::fuzz_decode(&bytes);
    }
}
