//! Activation time of generated bundles: compile (parse, patterns, CEL,
//! index) plus the bundle's own tests, as every reload runs them before a
//! swap. Run with `cargo bench --bench activation`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use authzd::policy::generate::generate_bundle;
use authzd::policy::{Bundle, testing};

fn activation(c: &mut Criterion) {
    let mut group = c.benchmark_group("activation");
    for rules in [10usize, 1_000, 10_000] {
        let files = generate_bundle(rules, "bench");
        if rules >= 10_000 {
            group.sample_size(10);
        }
        group.bench_with_input(
            BenchmarkId::new("compile_and_test", rules),
            &files,
            |b, files| {
                b.iter(|| {
                    let bundle =
                        Bundle::compile(black_box(files)).expect("generated bundle compiles");
                    let results = testing::run_tests(&bundle);
                    assert!(results.iter().all(|r| r.passed()));
                    black_box(bundle)
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, activation);
criterion_main!(benches);
