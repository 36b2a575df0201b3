//! Tickets presented by downloaders: any bytes are refused unless signed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringshare_engine::meta::Sha1Digest;
use ringshare_engine::ticket;

fuzz_target!(|data: &[u8]| {
    let public = ticket::public_key(&[5u8; 32]);
    assert!(ticket::verify(&public, data, "u", &Sha1Digest([1; 20]), None, 0).is_err());
});
