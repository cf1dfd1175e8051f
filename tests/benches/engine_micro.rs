//! Criterion micro-benchmarks: one durable commit, one read, one vread,
//! frame encoding and checking.

use criterion::{Criterion, criterion_group, criterion_main};
use vigil_engine::log::frame::{check_frame, encode_frame};
use vigil_engine::{Batch, Op, Store};
use vigil_fhir::synth::{Rng, patient_record};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let rec = patient_record(&mut Rng::new(3), 2000);
    for (ty, id, body) in &rec {
        store
            .commit(Batch::one(Op::put(ty.clone(), id.clone(), body.clone())))
            .expect("commit");
    }
    let mut i = 0u64;
    c.bench_function("commit one resource (durable)", |b| {
        b.iter(|| {
            i += 1;
            let (ty, _, body) = &rec[(i as usize) % rec.len()];
            store
                .commit(Batch::one(Op::put(
                    ty.clone(),
                    format!("n{i}"),
                    body.clone(),
                )))
                .expect("commit")
        })
    });
    let mut k = 0usize;
    c.bench_function("read current version", |b| {
        b.iter(|| {
            k = (k + 7) % rec.len();
            store.get(&rec[k].0, &rec[k].1).expect("get")
        })
    });
    c.bench_function("read version 1", |b| {
        b.iter(|| {
            k = (k + 7) % rec.len();
            store.get_version(&rec[k].0, &rec[k].1, 1).expect("vread")
        })
    });
    let payload = vec![7u8; 64 * 1024];
    c.bench_function("encode 64 KiB frame", |b| {
        b.iter(|| encode_frame(1, 1, 1, 1, &payload))
    });
    let frame = encode_frame(1, 1, 1, 1, &payload);
    c.bench_function("check 64 KiB frame", |b| {
        b.iter(|| check_frame(&frame).expect("valid"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
