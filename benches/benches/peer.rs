//! The piece server's session state machine and the downloader's picker:
//! the per-message and per-request work on the data plane's hot path.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringshare_engine::meta::{Bitfield, Geometry, PIECE_LEN};
use ringshare_engine::peer::{self, Message, ServerAction, ServerSession};
use ringshare_engine::picker::Picker;

/// Decoding a burst of whole-piece requests from the wire and running each
/// through `ServerSession` (range, outstanding and availability checks),
/// as a piece server does for every request.
fn bench_session(c: &mut Criterion) {
    let geometry = Geometry::new(2 << 30);
    let pieces = (2u64 << 30) / PIECE_LEN;
    let mut wire = Vec::new();
    for p in 0..256u32 {
        let piece = (p * 97) % pieces as u32;
        peer::encode(&Message::Request { piece, offset: 0, len: PIECE_LEN as u32 }, &mut wire);
    }
    let have = Bitfield::full(pieces as u32);
    let mut g = c.benchmark_group("peer_session");
    g.throughput(Throughput::Elements(256));
    g.bench_function("decode_and_check_256_requests", |b| {
        b.iter(|| {
            let mut s = ServerSession::new(1024);
            s.accept(geometry);
            let mut at = 0;
            let mut served = 0u64;
            while at < wire.len() {
                let (msg, used) = peer::decode(&wire[at..]).expect("valid request");
                at += used;
                if let Ok(ServerAction::Serve { len, .. }) = s.on_message(&msg, |i| have.get(i)) {
                    served += u64::from(len);
                    s.served();
                }
            }
            served
        })
    });
    g.finish();
}

/// Picking every piece of a file, rarest first, from `peers` peers that
/// have every piece (every availability equal: the scan finds no early
/// stop), verifying each as it goes. Per-pick cost grows with the file.
fn bench_picker(c: &mut Criterion) {
    let mut g = c.benchmark_group("picker_whole_file");
    for (pieces, peers) in [(512u32, 1u32), (4096, 1), (4096, 3), (40960, 3)] {
        g.throughput(Throughput::Elements(u64::from(pieces)));
        let id = BenchmarkId::from_parameter(format!("{pieces}_pieces_{peers}_peers"));
        g.bench_with_input(id, &(pieces, peers), |b, &(pieces, peers)| {
            let full = Bitfield::full(pieces);
            b.iter(|| {
                let mut picker = Picker::new(&Bitfield::new(pieces), 7);
                for _ in 0..peers {
                    picker.add_peer(&full);
                }
                let mut peer: u32 = 0;
                while let Some(p) = picker.pick(peer % peers, &full) {
                    assert!(picker.received(p.get(), peer % peers));
                    picker.verified(p.get());
                    peer += 1;
                }
                picker.have_count()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_session, bench_picker);
criterion_main!(benches);
