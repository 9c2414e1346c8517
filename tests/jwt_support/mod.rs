//! Shared parts of the JWT tests and benchmark: keys generated at run time,
//! token signing with any header, a fixture bundle, and a real gRPC server
//! on 127.0.0.1.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use authzd::jwt::JwtVerifier;
use authzd::policy::Bundle;
use authzd::server::AuthzService;
use authzd::store::BundleStore;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use jsonwebtoken::{Algorithm, EncodingKey};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;

pub const ISSUER: &str = "https://issuer.example.org";
pub const AUDIENCE: &str = "orders-api";

/// A signing key with its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: serde_json::Value,
    /// For RSA keys: the public key as PEM, DER and raw modulus.
    pub public_pem: Vec<u8>,
    pub public_der: Vec<u8>,
    pub modulus: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn rsa_key(kid: &str) -> TestKey {
    let private = rsa::PrivateKey::new(&mut rand::rng(), 2048).expect("RSA key generation");
    let public = private.to_public_key();
    let der = private.to_pkcs1_der().expect("PKCS#1 encoding");
    let modulus = public.n_bytes().to_vec();
    TestKey {
        kid: kid.to_owned(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: serde_json::json!({
            "kty": "RSA", "kid": kid, "use": "sig",
            "n": b64(&modulus), "e": b64(&public.e_bytes()),
        }),
        public_pem: public
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .expect("PEM encoding")
            .into_bytes(),
        public_der: public.to_public_key_der().expect("DER encoding").into_vec(),
        modulus,
    }
}

pub fn ec_key(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let point = pair.public_key_raw();
    let (x, y) = point[1..].split_at(32);
    TestKey {
        kid: kid.to_owned(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(x), "y": b64(y)}),
        public_pem: Vec::new(),
        public_der: Vec::new(),
        modulus: Vec::new(),
    }
}

pub fn ed_key(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
    TestKey {
        kid: kid.to_owned(),
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
        jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(pair.public_key_raw())}),
        public_pem: Vec::new(),
        public_der: Vec::new(),
        modulus: Vec::new(),
    }
}

/// Keys of the fixture provider, generated once per test binary: `k1`
/// (RSA), `e1` (P-256), `d1` (Ed25519), and `k9`, an RSA key the provider
/// does not list.
pub struct Keys {
    pub k1: TestKey,
    pub e1: TestKey,
    pub d1: TestKey,
    pub k9: TestKey,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        k1: rsa_key("k1"),
        e1: ec_key("e1"),
        d1: ed_key("d1"),
        k9: rsa_key("k9"),
    })
}

pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims that the fixture provider accepts and the `orders` rule allows
/// for tenant `acme`.
pub fn claims() -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "tenant": "acme",
        "scope": "orders:read",
        "iat": now(),
        "exp": now() + 600,
        "jti": uuid_like(),
    })
}

/// Returns a value unique to each call, so tokens differ and miss the cache.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Signs `claims` under the JSON `header` with `key` and `alg`.
pub fn sign_raw(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    key: &EncodingKey,
    alg: Algorithm,
) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("signing");
    format!("{message}.{signature}")
}

/// Signs `claims` with `key`, its algorithm and its `kid`.
pub fn sign(key: &TestKey, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": alg_name(key.alg), "typ": "JWT", "kid": key.kid});
    sign_raw(&header, claims, &key.encoding, key.alg)
}

pub fn alg_name(alg: Algorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The fixture `bundle.yaml` with the given `jwks:` block (YAML, indented
/// for its place under the provider).
pub fn manifest(revision: &str, jwks: &str) -> String {
    format!(
        r#"format: 1
name: jwt-fixture
revision: "{revision}"
claims:
  roles: roles
  tenant: tenant
jwt:
  providers:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      algorithms: [RS256, ES256, EdDSA]
      leeway_seconds: 60
      jwks:
{jwks}
"#
    )
}

pub const RULES: &str = r#"rules:
  - id: orders
    effect: allow
    methods: [GET, POST]
    paths: ["/tenants/{tenant}/orders/{id}"]
    scopes: ["orders:read"]
    condition: jwt.tenant == path.tenant
  - id: public
    effect: allow
    methods: [GET]
    paths: ["/public/**"]
"#;

/// The fixture JWKS with the given keys.
pub fn jwks(keys: &[&TestKey]) -> serde_json::Value {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

/// Writes a bundle directory and compiles it.
pub fn write_bundle(
    dir: &Path,
    manifest: &str,
    extra: &[(&str, String)],
) -> Result<Bundle, String> {
    std::fs::create_dir_all(dir.join("rules")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("bundle.yaml"), manifest).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("rules/orders.yaml"), RULES).map_err(|e| e.to_string())?;
    for (name, content) in extra {
        std::fs::write(dir.join(name), content).map_err(|e| e.to_string())?;
    }
    Bundle::load_dir(dir).map_err(|e| e.to_string())
}

/// The fixture bundle with `k1`, `e1` and `d1` in a JWKS file.
pub fn fixture_bundle(dir: &Path) -> Bundle {
    let keys = keys();
    let document = jwks(&[&keys.k1, &keys.e1, &keys.d1]).to_string();
    write_bundle(
        dir,
        &manifest("r1", "        file: keys.json"),
        &[("keys.json", document)],
    )
    .expect("fixture bundle compiles")
}

/// A running server and a client connected to it.
pub struct Server {
    pub address: SocketAddr,
    pub store: Arc<BundleStore>,
    pub verifier: Arc<JwtVerifier>,
    pub client: AuthorizationClient<tonic::transport::Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn start(bundle: Bundle) -> Server {
    let store = Arc::new(BundleStore::new());
    store.activate(Arc::new(bundle));
    let verifier = Arc::new(JwtVerifier::default());
    let service = AuthzService::new(store.clone()).with_verifier(verifier.clone());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(authzd::server::serve_tcp_with(listener, service, async {
        let _ = stopped.await;
    }));
    let client = AuthorizationClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    Server {
        address,
        store,
        verifier,
        client,
        stop: Some(stop),
    }
}

/// Builds a Check for `GET path` on `shop.example.org` with the given headers.
pub fn request(path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "req-1".to_owned(),
                    method: "GET".to_owned(),
                    host: "shop.example.org".to_owned(),
                    path: path.to_owned(),
                    scheme: "https".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

pub const ORDERS: &str = "/tenants/acme/orders/7";

/// What a Check returned, reduced to what tests assert.
#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    pub detail: String,
    pub body: serde_json::Value,
    pub metadata_detail: String,
    pub headers: HashMap<String, String>,
    pub removed: Vec<String>,
}

impl Outcome {
    pub fn allowed(&self) -> bool {
        self.status == 200
    }
}

pub fn outcome(response: &CheckResponse) -> Outcome {
    let metadata_detail = response
        .dynamic_metadata
        .as_ref()
        .and_then(|m| m.fields.get("detail"))
        .and_then(|v| match &v.kind {
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default();
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => Outcome {
            status: 200,
            detail: String::new(),
            body: serde_json::Value::Null,
            metadata_detail,
            headers: ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            removed: ok.headers_to_remove.clone(),
        },
        Some(HttpResponse::DeniedResponse(denied)) => {
            let body: serde_json::Value =
                serde_json::from_str(&denied.body).unwrap_or(serde_json::Value::Null);
            Outcome {
                status: denied.status.as_ref().map_or(0, |s| s.code as u16),
                detail: body["detail"].as_str().unwrap_or_default().to_owned(),
                body,
                metadata_detail,
                headers: denied
                    .headers
                    .iter()
                    .filter_map(|h| h.header.as_ref())
                    .map(|h| (h.key.clone(), h.value.clone()))
                    .collect(),
                removed: Vec::new(),
            }
        }
        _ => panic!("CheckResponse without an HTTP response: {response:?}"),
    }
}

impl Server {
    /// Sends one Check over gRPC.
    pub async fn check(&mut self, path: &str, headers: &[(&str, &str)]) -> Outcome {
        let response = self
            .client
            .check(request(path, headers))
            .await
            .expect("Check returns a CheckResponse, never a gRPC error")
            .into_inner();
        outcome(&response)
    }

    /// Sends `GET /tenants/acme/orders/7` with `authorization: Bearer token`.
    pub async fn check_token(&mut self, token: &str) -> Outcome {
        let value = format!("Bearer {token}");
        self.check(ORDERS, &[("authorization", &value)]).await
    }
}
