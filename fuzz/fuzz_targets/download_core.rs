//! The download core as peers and a driver can drive it: random peers,
//! random frames (through the wire decoder, as a driver reads them),
//! random piece arrivals with right or wrong digests, writes that fail,
//! and time jumps. It must never panic, never send anything but whole
//! frames, and never say to write a piece whose digest is not the file's.
#![no_main]
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringshare_engine::download::{Action, DownloadCore, PieceFate, Timeouts};
use ringshare_engine::meta::{Bitfield, FileMeta, Sha1Digest, PIECE_LEN};
use ringshare_engine::peer::{self, MAX_FRAME};
use ringshare_engine::wire;

const PIECES: u32 = 5;

fn digest(i: u32) -> Sha1Digest {
    Sha1Digest([i as u8 ^ 0xa5; 20])
}

fuzz_target!(|data: &[u8]| {
    let meta = FileMeta {
        name: "f".into(),
        len: u64::from(PIECES - 1) * PIECE_LEN + 1000,
        sha1: Sha1Digest([1; 20]),
        piece_hashes: (0..PIECES).map(digest).collect(),
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut core = DownloadCore::new(
        meta.clone(),
        "u".into(),
        b"t".to_vec(),
        None,
        &Bitfield::new(PIECES),
        Timeouts::default(),
        1,
        now,
    );
    let mut ops = data;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, b) = ops.split_at_checked(n)?;
        ops = b;
        Some(a)
    };
    let mut written = 0u64;
    while let Some(&[op, a, b]) = take(3) {
        let peer = u32::from(a % 6);
        let piece = u32::from(b) % (PIECES + 2);
        match op % 10 {
            0 => core.add_peers(&[SocketAddr::from(([10, 0, 0, a % 7], 1))], now),
            1 => core.connected(peer, now),
            2 => core.closed(peer, "gone"),
            3 => {
                // A run of bytes from the peer, cut into frames as a driver does.
                let n = usize::from(b);
                let Some(mut bytes) = take(n) else { break };
                while let Ok((frame, used)) = wire::decode(bytes, MAX_FRAME) {
                    core.on_frame(peer, frame.kind, frame.payload, now);
                    bytes = &bytes[used..];
                }
            }
            4 => {
                let bits = Bitfield::full(PIECES);
                let msg = peer::Message::Bitfield(bits.as_bytes());
                core.on_message(peer, &msg, now);
            }
            5 | 6 => {
                let len = match a % 3 {
                    0 => 1000,
                    1 => PIECE_LEN as usize,
                    _ => usize::from(b),
                };
                if core.on_piece(peer, piece, u32::from(a & 8), len, now) == PieceFate::Verify {
                    let d = if op % 10 == 5 { digest(piece) } else { Sha1Digest([b; 20]) };
                    if core.piece_hashed(piece, d) {
                        assert_eq!(Some(&d), meta.piece_hashes.get(piece as usize));
                        let r = if a == 255 { Err("disk full".to_owned()) } else { Ok(()) };
                        if r.is_ok() {
                            written += 1;
                        }
                        core.piece_written(piece, r, now);
                    }
                }
            }
            7 => {
                core.piece_hashed(piece, Sha1Digest([b; 20]));
            }
            8 => {
                core.piece_written(piece, Ok(()), now);
            }
            _ => {
                now += Duration::from_millis(u64::from(a) * u64::from(b) * 4);
                core.tick(now);
            }
        }
        while let Some(action) = core.poll_action() {
            if let Action::Send { mut bytes, .. } = action.clone() {
                while !bytes.is_empty() {
                    let (_, used) = peer::decode(&bytes).expect("the core sends whole frames");
                    bytes.drain(..used);
                }
            }
            if action == Action::Complete {
                assert_eq!(core.stats().verified, meta.len);
            }
        }
        assert!(written <= u64::from(PIECES));
        assert!(core.stats().verified <= meta.len);
    }
});
