//! Decision cost: request normalization, and one decision on generated
//! bundles of 10, 1,000 and 100,000 rules.
//!
//! Run with `cargo bench --bench decision`; results and the machine they
//! came from are in docs/benchmarks.md.

use std::hint::black_box;

use authzd::engine::{self, RequestLimits, UserSource};
use authzd::policy::model::ExpectedDecision;
use authzd::policy::testing::{build_check, user_source};
use authzd::policy::{Bundle, generate::generate_bundle};
use authzd::request::{PathOptions, RequestFacts};
#[path = "support/mod.rs"]
mod support;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

fn normalization(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    for (name, path) in [
        ("plain", "/tenants/acme/orders/42"),
        ("query", "/tenants/acme/orders/42?expand=items&limit=10"),
        ("encoded", "/tenants/acme%2Dcorp/orders/%34%32"),
        ("dot-segments", "/tenants/acme/./orders/../orders/42"),
    ] {
        group.bench_with_input(BenchmarkId::new("path", name), path, |b, path| {
            b.iter(|| authzd::request::path::normalize(black_box(path), PathOptions::default()))
        });
    }

    let check = realistic_check();
    group.bench_function("check-request-facts", |b| {
        b.iter(|| {
            RequestFacts::from_check(black_box(&check), PathOptions::default())
                .map(|f| f.path.segment_count())
        })
    });
    group.finish();
}

/// A CheckRequest as Envoy sends it, with about 15 headers.
fn realistic_check() -> CheckRequest {
    let bundle_request = authzd::policy::model::TestRequest {
        method: "GET".to_owned(),
        host: "shop.example.org".to_owned(),
        path: "/tenants/acme/orders/42?expand=items".to_owned(),
        headers: [
            ("accept", "application/json"),
            ("accept-encoding", "gzip, br"),
            ("accept-language", "en-GB,en;q=0.9"),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            ),
            ("x-request-id", "4f0c6a1e-8f62-4d2c-9d59-8e0b4c8f4b2a"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-envoy-expected-rq-timeout-ms", "15000"),
            ("content-type", "application/json"),
            ("cache-control", "no-cache"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        principal: Some("spiffe://example.org/ns/shop/sa/frontend".to_owned()),
        ..Default::default()
    };
    build_check(&bundle_request).expect("valid request").0
}

fn decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for rules in [10usize, 1_000, 100_000] {
        let bundle =
            Bundle::compile(&generate_bundle(rules, "bench")).expect("generated bundle compiles");

        // Decide the bundle's own allow tests, which name requests that match
        // a rule (with its condition, where it has one).
        let cases: Vec<(CheckRequest, UserSource)> = bundle
            .tests
            .iter()
            .filter(|test| test.spec.expect.decision == ExpectedDecision::Allow)
            .map(|test| {
                let (check, claims) = build_check(&test.spec.request).expect("valid test request");
                (check, user_source(claims, &bundle))
            })
            .collect();
        assert!(!cases.is_empty(), "generated bundle has allow tests");
        for (check, user) in &cases {
            let decision =
                engine::decide(&bundle, check, user, RequestLimits::default(), None).decision;
            assert!(decision.allowed, "{decision:?}");
        }

        group.bench_with_input(BenchmarkId::new("rules", rules), &cases, |b, cases| {
            let mut next = 0usize;
            b.iter(|| {
                let (check, user) = &cases[next % cases.len()];
                next = next.wrapping_add(1);
                engine::decide(
                    black_box(&bundle),
                    black_box(check),
                    user,
                    RequestLimits::default(),
                    None,
                )
                .decision
                .allowed
            })
        });
    }
    group.finish();
}

/// The whole Check handler without the transport: token from the cache,
/// identities, decision, response and metrics, as the load benchmark
/// sends it.
fn handler(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    support::write_bench_bundle(dir.path(), 1_000);
    let bundle = Bundle::load_dir(&dir.path().join("bundle")).expect("benchmark bundle");
    let store = std::sync::Arc::new(authzd::store::BundleStore::new());
    store.activate(std::sync::Arc::new(bundle));
    let service = authzd::server::AuthzService::new(store);
    let request = support::bench_request();
    let first = service.check_now(&request);
    assert_eq!(
        first.status.map(|s| s.code),
        Some(0),
        "the benchmark request is allowed"
    );

    c.bench_function("check_now/bundle-1000", |b| {
        b.iter(|| service.check_now(black_box(&request)))
    });
    let response = service.check_now(&request);
    c.bench_function("encode-response", |b| {
        b.iter(|| prost::Message::encode_to_vec(black_box(&response)))
    });
}

criterion_group!(benches, normalization, decision, handler);
criterion_main!(benches);
