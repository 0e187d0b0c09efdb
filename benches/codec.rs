//! Criterion benchmarks of the hot path of a call: the VEC codec on the
//! messages an echo call exchanges, and one whole call through two links
//! in one process (no sockets: an in-memory pipe, one thread).
//!
//! Run with `cargo bench --bench codec`; `cargo bench --bench codec -- decode`
//! runs a subset.

#[path = "support/echo_pair.rs"]
mod echo_pair;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::stream::{FuturesUnordered, StreamExt};
use vole::link::Value;
use vole::transport::entity::{Entity, Owner, RawRefs, WireRef};
use vole::transport::vec::{Codec, DecodeConfig, Decoder, EncodeConfig, Encoder};

/// The VOL message of a call `echo("x" * n)` on object 5 with message id
/// 1000: `(1000, METHOD_CALL, (ref, ("echo", payload)))`.
fn call_message(n: usize) -> Entity {
    Entity::Tuple(vec![
        Entity::Int(1000),
        Entity::Int(1),
        Entity::Tuple(vec![
            Entity::Ref(WireRef {
                owner: Owner::Receiver,
                id: 5,
            }),
            Entity::Tuple(vec![Entity::str("echo"), Entity::str("x".repeat(n))]),
        ]),
    ])
}

/// Its result: `(1000, CALL_RESULT, (1000, payload))`.
fn result_message(n: usize) -> Entity {
    Entity::Tuple(vec![
        Entity::Int(1000),
        Entity::Int(4),
        Entity::Tuple(vec![Entity::Int(1000), Entity::str("x".repeat(n))]),
    ])
}

fn encoder() -> Encoder {
    Encoder::new(EncodeConfig {
        str_codec: Some(Codec::Utf8),
        ..EncodeConfig::default()
    })
}

fn encoded(e: &Entity) -> Vec<u8> {
    let mut out = Vec::new();
    encoder()
        .encode(e, &mut RawRefs, &mut out)
        .expect("encodes");
    out
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("vec");
    for (name, msg) in [("call", call_message(64)), ("result", result_message(64))] {
        let bytes = encoded(&msg);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("encode {name} 64B"), |b| {
            let enc = encoder();
            let mut out = Vec::with_capacity(256);
            b.iter(|| {
                out.clear();
                enc.encode(black_box(&msg), &mut RawRefs, &mut out)
                    .expect("encodes");
                black_box(out.len())
            })
        });
        g.bench_function(format!("decode {name} 64B"), |b| {
            let mut dec = Decoder::new(DecodeConfig::default());
            dec.set_peer_codec(Some(Codec::Utf8));
            let mut buf = BytesMut::with_capacity(bytes.len());
            b.iter(|| {
                buf.extend_from_slice(black_box(&bytes));
                let e = dec.decode(&mut buf, &mut RawRefs).expect("decodes");
                black_box(e)
            })
        });
        // Many messages in one buffer, as one read of a pipelined link
        // delivers them.
        let batch: Vec<u8> = bytes.repeat(16);
        g.throughput(Throughput::Elements(16));
        g.bench_function(format!("decode 16 x {name} 64B"), |b| {
            let mut dec = Decoder::new(DecodeConfig::default());
            dec.set_peer_codec(Some(Codec::Utf8));
            let mut buf = BytesMut::with_capacity(batch.len());
            b.iter(|| {
                buf.extend_from_slice(black_box(&batch));
                while let Some(e) = dec.decode(&mut buf, &mut RawRefs).expect("decodes") {
                    black_box(e);
                }
            })
        });
    }
    g.finish();
}

/// Calls per iteration of the link benchmark, and in flight at once.
fn link(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_link, target) = rt.block_on(echo_pair::echo_pair());
    let target = Arc::new(target);
    let payload = "x".repeat(64);
    let mut g = c.benchmark_group("link");
    g.measurement_time(Duration::from_secs(5));
    for inflight in [1usize, 16] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("echo 64B, {inflight} in flight"), |b| {
            b.iter_custom(|iters| {
                let target = target.clone();
                let payload = payload.clone();
                rt.block_on(async move {
                    let start = Instant::now();
                    let mut calls = FuturesUnordered::new();
                    let mut started = 0u64;
                    let call = || target.call("echo", vec![Value::Str(payload.clone())]);
                    while started < iters.min(inflight as u64) {
                        calls.push(call());
                        started += 1;
                    }
                    while let Some(r) = calls.next().await {
                        r.expect("echo");
                        if started < iters {
                            calls.push(call());
                            started += 1;
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec, link);
criterion_main!(benches);
