//! The bundle and CheckRequest the load benchmark uses: a generated bundle
//! plus a JWT provider and one rule for the benchmark's request.

use std::path::Path;
use std::sync::OnceLock;

use authzd::policy::generate::generate_bundle;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};

const ISSUER: &str = "https://issuer.example.org";
const AUDIENCE: &str = "orders-api";
const FRONTEND: &str = "spiffe://example.org/ns/shop/sa/frontend";

/// A P-256 key generated once per benchmark process.
struct SigningKey {
    encoding: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

fn signing_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let point = pair.public_key_raw();
        let (x, y) = point[1..].split_at(32);
        SigningKey {
            encoding: jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": "bench", "use": "sig",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            }),
        }
    })
}

/// Writes `dir/bundle`: `rules` generated rules, the benchmark's rule and a
/// JWT provider whose key this process holds.
pub fn write_bench_bundle(dir: &Path, rules: usize) {
    let mut files = generate_bundle(rules.saturating_sub(1).max(1), "bench");
    let jwks = serde_json::json!({"keys": [signing_key().jwk.clone()]});
    let manifest = format!(
        "format: 1\nname: load-benchmark\nrevision: \"bench-{rules}\"\nclaims: {{roles: realm_access.roles, tenant: tenant}}\njwt:\n  providers:\n    - issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n      algorithms: [ES256]\n      jwks:\n        inline: {jwks}\n"
    );
    files
        .files
        .insert("bundle.yaml".to_owned(), manifest.into_bytes());
    files.files.insert(
        "rules/benchmark.yaml".to_owned(),
        format!(
            "rules:\n  - id: bench-orders-read\n    effect: allow\n    hosts: [shop.example.org]\n    methods: [GET]\n    paths: [\"/tenants/{{tenant}}/orders/{{id}}\"]\n    principals: [\"{FRONTEND}\"]\n    scopes: [\"orders:read\"]\n    condition: jwt.tenant == path.tenant\n"
        )
        .into_bytes(),
    );

    let root = dir.join("bundle");
    for (name, content) in &files.files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().expect("file in a directory"))
            .expect("bundle directory");
        std::fs::write(path, content).expect("bundle file written");
    }
}

/// A CheckRequest as Envoy sends it for a signed-in user behind the
/// frontend workload: 15 headers, a bearer token and a SPIFFE principal.
pub fn bench_request() -> CheckRequest {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "tenant": "acme",
        "scope": "orders:read profile", "iat": now, "exp": now + 86_400,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("bench".to_owned());
    let token =
        jsonwebtoken::encode(&header, &claims, &signing_key().encoding).expect("token signed");

    let headers = [
        (":method", "GET".to_owned()),
        (":path", "/tenants/acme/orders/42?expand=items".to_owned()),
        (":authority", "shop.example.org".to_owned()),
        (":scheme", "https".to_owned()),
        ("authorization", format!("Bearer {token}")),
        ("accept", "application/json".to_owned()),
        ("accept-encoding", "gzip, br".to_owned()),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36".to_owned(),
        ),
        (
            "x-request-id",
            "4f0c6a1e-8f62-4d2c-9d59-8e0b4c8f4b2a".to_owned(),
        ),
        (
            "x-b3-traceid",
            "80f198ee56343ba864fe8b2a57d3eff7".to_owned(),
        ),
        ("x-b3-spanid", "e457b5a2e4d86bd1".to_owned()),
        ("x-b3-sampled", "1".to_owned()),
        ("x-forwarded-proto", "https".to_owned()),
        ("x-forwarded-for", "10.1.2.3".to_owned()),
        ("x-envoy-expected-rq-timeout-ms", "15000".to_owned()),
    ];
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: FRONTEND.to_owned(),
                ..Default::default()
            }),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    id: "4f0c6a1e-8f62-4d2c-9d59-8e0b4c8f4b2a".to_owned(),
                    method: "GET".to_owned(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), v.clone()))
                        .collect(),
                    path: "/tenants/acme/orders/42?expand=items".to_owned(),
                    host: "shop.example.org".to_owned(),
                    scheme: "https".to_owned(),
                    protocol: "HTTP/2".to_owned(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}
