//! Bytes from the network at an encrypted link: whatever arrives during the
//! handshake (at either end) or in place of transport records, the link
//! never panics, never hands out plaintext that was not sealed by the other
//! end, and never becomes ready without a real handshake.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringshare_engine::secure::{Keypair, Link, CONTROL_PROLOGUE};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else { return };
    let a = Keypair::from_secret([3; 32]);
    let b = Keypair::from_secret([4; 32]);
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    match mode % 3 {
        // The accepting end, fed anything as the first messages.
        0 => {
            let mut r = Link::responder(&b, CONTROL_PROLOGUE).unwrap();
            let _ = r.recv(bytes, &mut plain, &mut out);
            assert!(!r.is_ready() && plain.is_empty());
        }
        // The connecting end, fed anything as the answer.
        1 => {
            let mut first = Vec::new();
            let mut i = Link::initiator(&a, CONTROL_PROLOGUE, None, &mut first).unwrap();
            let _ = i.recv(bytes, &mut plain, &mut out);
            assert!(!i.is_ready() && plain.is_empty());
        }
        // A real handshake, then anything in place of transport records.
        _ => {
            let mut to_b = Vec::new();
            let mut i = Link::initiator(&a, CONTROL_PROLOGUE, None, &mut to_b).unwrap();
            let mut r = Link::responder(&b, CONTROL_PROLOGUE).unwrap();
            for _ in 0..2 {
                let mut to_a = Vec::new();
                r.recv(&to_b, &mut plain, &mut to_a).unwrap();
                to_b.clear();
                i.recv(&to_a, &mut plain, &mut to_b).unwrap();
            }
            r.recv(&to_b, &mut plain, &mut out).unwrap();
            assert!(i.is_ready() && r.is_ready());
            let _ = r.recv(bytes, &mut plain, &mut out);
            assert!(plain.is_empty(), "forged records never decrypt");
        }
    }
});
