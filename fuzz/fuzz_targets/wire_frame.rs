//! Frames: any bytes, any limit — never a panic; a decoded frame fits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringshare_engine::wire;

fuzz_target!(|data: &[u8]| {
    let max = data.first().map_or(64, |b| u32::from(*b) * 64);
    let mut buf = data;
    while let Ok((frame, used)) = wire::decode(buf, max) {
        assert!(used >= wire::HEADER_LEN && used <= buf.len());
        assert_eq!(frame.payload.len() + wire::HEADER_LEN, used);
        buf = &buf[used..];
    }
});
