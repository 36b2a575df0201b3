//! Encoding and decoding control-plane frames.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringshare_engine::meta::{FileMeta, Sha1Digest};
use ringshare_engine::proto::{self, Request, Token, MAX_FRAME, REQUEST};
use ringshare_engine::wire;

fn bench_wire(c: &mut Criterion) {
    let small = Request::ListFiles { token: Token([7; 16]), group: "group-1".into() };
    // The upload of a 2 GiB file: 4096 piece hashes.
    let big = Request::UploadFile {
        token: Token([7; 16]),
        group: "group-1".into(),
        meta: FileMeta {
            name: "big.bin".into(),
            len: 2 << 30,
            sha1: Sha1Digest([1; 20]),
            piece_hashes: vec![Sha1Digest([2; 20]); 4096],
        },
    };
    let mut g = c.benchmark_group("wire");
    for (name, req) in [("small_request", &small), ("upload_2GiB_meta", &big)] {
        let frame = proto::encode_frame(REQUEST, req).unwrap();
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| proto::encode_frame(REQUEST, req).unwrap())
        });
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| {
                let (f, _) = wire::decode(&frame, MAX_FRAME).unwrap();
                postcard::from_bytes::<Request>(f.payload).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_wire);
criterion_main!(benches);
