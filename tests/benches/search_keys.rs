//! Search-key extraction, per resource: what every write (from the parsed
//! body) and every replica, rebuild and restore (from the stored bytes)
//! spends on the official parameters' FHIRPath expressions.
//! `cargo bench -p vigil-tests --bench search_keys`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use vigil_engine::KeyExtractor;
use vigil_fhir::search::{SearchKeys, keys_of_value};
use vigil_fhir::synth::{Rng, patient, patient_record};

fn bench(c: &mut Criterion) {
    let mut rng = Rng::new(42);
    let patients: Vec<Value> = (0..64)
        .map(|i| patient(&mut rng, &format!("p{i}")))
        .collect();
    let record: Vec<(String, Value, Vec<u8>)> = patient_record(&mut rng, 40)
        .into_iter()
        .map(|(ty, _, body)| {
            let v = serde_json::from_slice(&body).expect("generated JSON");
            (ty, v, body)
        })
        .collect();
    let mut g = c.benchmark_group("search_keys");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("patient_parsed", |b| {
        b.iter(|| {
            i = (i + 1) % patients.len();
            let mut out = Vec::with_capacity(64);
            keys_of_value("Patient", &patients[i], &mut out);
            out
        })
    });
    let mut j = 0;
    g.bench_function("record_parsed", |b| {
        b.iter(|| {
            j = (j + 1) % record.len();
            let (ty, v, _) = &record[j];
            let mut out = Vec::with_capacity(64);
            keys_of_value(ty, v, &mut out);
            out
        })
    });
    let mut k = 0;
    let extractor = SearchKeys::default();
    g.bench_function("record_bytes", |b| {
        b.iter(|| {
            k = (k + 1) % record.len();
            let (ty, _, body) = &record[k];
            let mut out = Vec::with_capacity(64);
            extractor.keys(ty, body, &mut out);
            out
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
