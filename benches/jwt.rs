//! Token verification cost: a cached token, and uncached RS256, ES256 and
//! EdDSA tokens, through `JwtVerifier::authenticate` with a fixture bundle.
//!
//! Run with `cargo bench --bench jwt`.

#[path = "../tests/jwt_support/mod.rs"]
mod jwt_support;

use std::hint::black_box;

use authzd::engine::UserSource;
use authzd::jwt::JwtVerifier;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jwt_support::*;

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bundle = fixture_bundle(dir.path());
    let verifier = JwtVerifier::default();
    let keys = keys();

    let check_for = |token: &str| {
        let value = format!("Bearer {token}");
        request(ORDERS, &[("authorization", &value)])
    };
    let assert_verified = |outcome: &authzd::jwt::Authentication| {
        assert!(
            matches!(outcome.user, UserSource::Verified(_)),
            "{:?}",
            outcome.user
        );
    };

    let cached = check_for(&sign(&keys.k1, &claims()));
    assert_verified(&verifier.authenticate(&bundle, &cached));
    c.bench_function("jwt/cached", |b| {
        b.iter(|| black_box(verifier.authenticate(&bundle, black_box(&cached))))
    });

    for (name, key) in [
        ("rs256", &keys.k1),
        ("es256", &keys.e1),
        ("eddsa", &keys.d1),
    ] {
        assert_verified(&verifier.authenticate(&bundle, &check_for(&sign(key, &claims()))));
        c.bench_function(&format!("jwt/uncached_{name}"), |b| {
            b.iter_batched(
                || check_for(&sign(key, &claims())),
                |check| black_box(verifier.authenticate(&bundle, &check)),
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, verify);
criterion_main!(benches);
