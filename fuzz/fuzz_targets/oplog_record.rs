//! The op-log reader: record framing, CRC and entry decoding, as recovery
//! meets them after a crash or on a damaged disk.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringshare_tracker::oplog::{decode_record, Entry};

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok((_, payload, used)) = decode_record(buf) {
        let _ = postcard::from_bytes::<Entry>(payload);
        buf = &buf[used..];
    }
});
