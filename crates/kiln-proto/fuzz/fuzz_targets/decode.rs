//! Fuzzes the frame decoder and the JSON message parsers with arbitrary bytes:
//! `cargo +nightly fuzz run decode` (from crates/kiln-proto).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln_proto::frame::fuzz_decode(data);
});
