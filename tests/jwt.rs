//! End-user tokens through the real gRPC server: every rejection reason,
//! the credential header, and bundle loading errors.

mod jwt_support;

use jwt_support::*;
use serde_json::json;

/// Starts a server on the fixture bundle; the directory lives as long as it.
async fn fixture() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bundle = fixture_bundle(dir.path());
    (start(bundle).await, dir)
}

/// Asserts a 401 whose body, metadata and `www-authenticate` name `reason`.
fn assert_rejected(outcome: &Outcome, reason: &str, case: &str) {
    assert_eq!(outcome.status, 401, "{case}: {outcome:?}");
    assert_eq!(outcome.body["reason"], "invalid_token", "{case}");
    assert_eq!(outcome.detail, reason, "{case}");
    assert_eq!(outcome.metadata_detail, reason, "{case}");
    let challenge = outcome
        .headers
        .get("www-authenticate")
        .cloned()
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{case}: {challenge}"
    );
    assert!(challenge.contains(reason), "{case}: {challenge}");
}

#[tokio::test]
async fn valid_tokens_allowed() {
    let (mut server, _dir) = fixture().await;
    let keys = keys();
    for key in [&keys.k1, &keys.e1, &keys.d1] {
        let outcome = server.check_token(&sign(key, &claims())).await;
        assert!(outcome.allowed(), "{}: {outcome:?}", key.kid);
        assert_eq!(
            outcome.headers.get("x-authz-subject").map(String::as_str),
            Some("alice")
        );
        assert!(
            outcome.removed.contains(&"authorization".to_owned()),
            "{:?}",
            outcome.removed
        );
    }
}

#[tokio::test]
async fn cached_token_allowed_again() {
    let (mut server, _dir) = fixture().await;
    let token = sign(&keys().k1, &claims());
    assert!(server.check_token(&token).await.allowed());
    assert_eq!(server.verifier.cached_tokens(), 1);
    let again = server.check_token(&token).await;
    assert!(again.allowed(), "{again:?}");
    assert_eq!(
        again.headers.get("x-authz-subject").map(String::as_str),
        Some("alice")
    );
}

#[tokio::test]
async fn missing_token_is_anonymous() {
    let (mut server, _dir) = fixture().await;
    assert!(server.check("/public/a", &[]).await.allowed());
    assert!(
        server
            .check("/public/a", &[("authorization", "Basic dXNlcjpwdw==")])
            .await
            .allowed()
    );
    let orders = server.check(ORDERS, &[]).await;
    assert_eq!(orders.status, 403, "{orders:?}");
    assert_eq!(orders.body["reason"], "no_matching_rule");
}

#[tokio::test]
async fn invalid_token_denied_on_public_path() {
    let (mut server, _dir) = fixture().await;
    let value = format!("Bearer {}", sign(&keys().k9, &claims()));
    let outcome = server
        .check("/public/a", &[("authorization", &value)])
        .await;
    assert_rejected(&outcome, "unknown_key", "public path");
}

#[tokio::test]
async fn two_tokens_rejected() {
    let (mut server, _dir) = fixture().await;
    let keys = keys();
    let valid = sign(&keys.k1, &claims());
    let forged = sign(&keys.k9, &claims());
    let cases = [
        format!("Bearer {valid}, Bearer {forged}"),
        format!("Bearer {valid},Bearer {valid}"),
        format!("Bearer {forged}, Bearer {valid}"),
        format!("Basic dXNlcg==, Bearer {valid}"),
    ];
    for value in &cases {
        let outcome = server.check(ORDERS, &[("authorization", value)]).await;
        assert_rejected(&outcome, "multiple_tokens", value);
    }
}

#[tokio::test]
async fn audience_forms() {
    let (mut server, _dir) = fixture().await;
    let k1 = &keys().k1;
    let denied = [
        ("other", Some(json!(["billing-api"]))),
        ("empty list", Some(json!([]))),
        ("empty string", Some(json!(""))),
        ("number", Some(json!(123))),
        ("mixed list", Some(json!([123, "orders-api"]))),
        ("absent", None),
        ("case", Some(json!("Orders-API"))),
    ];
    for (case, aud) in denied {
        let mut claims = claims();
        match aud {
            Some(aud) => claims["aud"] = aud,
            None => {
                claims.as_object_mut().map(|c| c.remove("aud"));
            }
        }
        let outcome = server.check_token(&sign(k1, &claims)).await;
        assert_rejected(&outcome, "invalid_audience", case);
    }

    for aud in [json!("orders-api"), json!(["billing-api", "orders-api"])] {
        let mut claims = claims();
        claims["aud"] = aud.clone();
        let outcome = server.check_token(&sign(k1, &claims)).await;
        assert!(outcome.allowed(), "{aud}: {outcome:?}");
    }
}

#[tokio::test]
async fn alg_none_and_key_confusion() {
    let (mut server, _dir) = fixture().await;
    let keys = keys();
    let body = URL_SAFE.encode(claims().to_string());
    let signature = sign(&keys.k1, &claims())
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_owned();

    for alg in ["none", "None", "NONE"] {
        let header = URL_SAFE.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
        for tail in ["", signature.as_str()] {
            let token = format!("{header}.{body}.{tail}");
            let outcome = server.check_token(&token).await;
            assert_rejected(&outcome, "alg_none", alg);
        }
    }

    let secrets: [(&str, &[u8]); 3] = [
        ("pem", &keys.k1.public_pem),
        ("der", &keys.k1.public_der),
        ("modulus", &keys.k1.modulus),
    ];
    for (case, secret) in secrets {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "k1"});
        let key = jsonwebtoken::EncodingKey::from_secret(secret).expect("HMAC key");
        let token = sign_raw(&header, &claims(), &key, jsonwebtoken::Algorithm::HS256);
        let outcome = server.check_token(&token).await;
        assert_rejected(&outcome, "key_type_mismatch", case);
    }

    let header = json!({"alg": "HS256", "typ": "JWT"});
    let key = jsonwebtoken::EncodingKey::from_secret(&keys.k1.public_pem).expect("HMAC key");
    let token = sign_raw(&header, &claims(), &key, jsonwebtoken::Algorithm::HS256);
    assert_rejected(
        &server.check_token(&token).await,
        "algorithm_not_allowed",
        "HS256 no kid",
    );

    let header = json!({"alg": "RS256", "kid": "e1"});
    let token = sign_raw(
        &header,
        &claims(),
        &keys.k1.encoding,
        jsonwebtoken::Algorithm::RS256,
    );
    assert_rejected(
        &server.check_token(&token).await,
        "key_type_mismatch",
        "RS256 with e1",
    );

    let header = json!({"typ": "JWT", "kid": "k1"});
    let token = sign_raw(
        &header,
        &claims(),
        &keys.k1.encoding,
        jsonwebtoken::Algorithm::RS256,
    );
    assert_rejected(
        &server.check_token(&token).await,
        "missing_algorithm",
        "no alg",
    );

    let header = json!({"alg": "PS256", "kid": "k1"});
    let token = sign_raw(
        &header,
        &claims(),
        &keys.k1.encoding,
        jsonwebtoken::Algorithm::PS256,
    );
    assert_rejected(
        &server.check_token(&token).await,
        "algorithm_not_allowed",
        "PS256",
    );
}

#[tokio::test]
async fn crit_headers_rejected() {
    let (mut server, _dir) = fixture().await;
    let k1 = &keys().k1;
    let cases = [
        json!({"alg": "RS256", "kid": "k1", "crit": ["x-bind"], "x-bind": "abc"}),
        json!({"alg": "RS256", "kid": "k1", "crit": ["x-bind"]}),
        json!({"alg": "RS256", "kid": "k1", "crit": []}),
        json!({"alg": "RS256", "kid": "k1", "crit": "x-bind"}),
        json!({"alg": "RS256", "kid": "k1", "crit": ["alg"]}),
        json!({"alg": "RS256", "kid": "k1", "crit": [null]}),
    ];
    for header in cases {
        let token = sign_raw(
            &header,
            &claims(),
            &k1.encoding,
            jsonwebtoken::Algorithm::RS256,
        );
        let outcome = server.check_token(&token).await;
        assert_rejected(&outcome, "crit_not_supported", &header.to_string());
    }
}

#[tokio::test]
async fn key_selection() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let keys = keys();
    // `k9` is listed without a `kid`, so no `kid` can select it.
    let mut anonymous_k9 = keys.k9.jwk.clone();
    anonymous_k9.as_object_mut().map(|k| k.remove("kid"));
    let document = json!({"keys": [keys.k1.jwk, keys.e1.jwk, anonymous_k9]}).to_string();
    let manifest = manifest("r1", "        file: keys.json");
    let bundle =
        write_bundle(dir.path(), &manifest, &[("keys.json", document)]).expect("bundle compiles");
    let mut server = start(bundle).await;

    let token = sign(&keys.k9, &claims());
    assert_rejected(
        &server.check_token(&token).await,
        "unknown_key",
        "k9 by kid",
    );

    // Without `kid`, each RS256 key is tried: k9 (listed last) verifies.
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let token = sign_raw(
        &header,
        &claims(),
        &keys.k9.encoding,
        jsonwebtoken::Algorithm::RS256,
    );
    let outcome = server.check_token(&token).await;
    assert!(outcome.allowed(), "{outcome:?}");

    // Without `kid`, a key that no listed key verifies is rejected.
    let other = rsa_key("other");
    let token = sign_raw(
        &header,
        &claims(),
        &other.encoding,
        jsonwebtoken::Algorithm::RS256,
    );
    assert_rejected(
        &server.check_token(&token).await,
        "invalid_signature",
        "no kid, no key",
    );

    // Key-bearing headers are rejected and never fetched.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}/jwks", listener.local_addr().expect("address"));
    let cases = [
        json!({"alg": "RS256", "kid": "k1", "jku": url}),
        json!({"alg": "RS256", "kid": "k1", "x5u": url}),
        json!({"alg": "RS256", "kid": "k1", "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}),
        json!({"alg": "RS256", "jwk": other.jwk}),
    ];
    for header in cases {
        let token = sign_raw(
            &header,
            &claims(),
            &other.encoding,
            jsonwebtoken::Algorithm::RS256,
        );
        let outcome = server.check_token(&token).await;
        assert_rejected(&outcome, "untrusted_key_header", &header.to_string());
    }
    assert!(
        listener.accept().is_err(),
        "a token header caused an outbound fetch"
    );
}

#[tokio::test]
async fn signature_and_time_rejected() {
    let (mut server, _dir) = fixture().await;
    let keys = keys();

    let token = sign(&keys.k1, &claims());
    let (message, _) = token.rsplit_once('.').unwrap_or_default();
    let other = sign(&keys.k1, &claims());
    let (_, foreign_signature) = other.rsplit_once('.').unwrap_or_default();
    let swapped = format!("{message}.{foreign_signature}");
    assert_rejected(
        &server.check_token(&swapped).await,
        "invalid_signature",
        "swapped signature",
    );

    let mut tampered = claims();
    tampered["tenant"] = json!("globex");
    let header = token.split('.').next().unwrap_or_default();
    let forged = format!(
        "{header}.{}.{}",
        URL_SAFE.encode(tampered.to_string()),
        token.rsplit('.').next().unwrap_or_default()
    );
    assert_rejected(
        &server.check_token(&forged).await,
        "invalid_signature",
        "tampered claims",
    );

    let cases = [
        ("expired", json!({"exp": now() - 120}), "expired"),
        (
            "not yet valid",
            json!({"nbf": now() + 120}),
            "not_yet_valid",
        ),
        (
            "issued in future",
            json!({"iat": now() + 120}),
            "issued_in_future",
        ),
        ("no exp", json!({"exp": null}), "missing_expiry"),
        ("exp text", json!({"exp": "tomorrow"}), "invalid_claim"),
        ("iat text", json!({"iat": "now"}), "invalid_claim"),
        ("sub number", json!({"sub": 7}), "invalid_claim"),
        (
            "wrong issuer",
            json!({"iss": "https://evil.example.org"}),
            "unknown_issuer",
        ),
        ("issuer list", json!({"iss": [ISSUER]}), "missing_issuer"),
        ("no issuer", json!({"iss": null}), "missing_issuer"),
    ];
    for (case, changes, reason) in cases {
        let mut claims = claims();
        for (name, value) in changes.as_object().into_iter().flatten() {
            match value {
                serde_json::Value::Null => {
                    claims.as_object_mut().map(|c| c.remove(name));
                }
                _ => claims[name] = value.clone(),
            }
        }
        let outcome = server.check_token(&sign(&keys.k1, &claims)).await;
        assert_rejected(&outcome, reason, case);
    }

    let mut within_leeway = claims();
    within_leeway["exp"] = json!(now() - 30);
    within_leeway["nbf"] = json!(now() + 30);
    within_leeway["iat"] = json!(now() + 30);
    let outcome = server.check_token(&sign(&keys.k1, &within_leeway)).await;
    assert!(outcome.allowed(), "{outcome:?}");
}

#[tokio::test]
async fn malformed_tokens_rejected() {
    let (mut server, _dir) = fixture().await;
    let token = sign(&keys().k1, &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let cases = [
        (
            "two segments",
            format!("{}.{}", parts[0], parts[1]),
            "malformed_token",
        ),
        ("five segments", format!("{token}.a.b"), "malformed_token"),
        (
            "padding",
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            "malformed_base64",
        ),
        (
            "standard alphabet",
            format!("{}.{}+/.{}", parts[0], parts[1], parts[2]),
            "malformed_base64",
        ),
        (
            "header not json",
            format!("{}.{}.{}", URL_SAFE.encode("alg"), parts[1], parts[2]),
            "malformed_json",
        ),
        (
            "claims not json",
            format!("{}.{}.{}", parts[0], URL_SAFE.encode("[1,2"), parts[2]),
            "malformed_json",
        ),
        (
            "claims array",
            format!("{}.{}.{}", parts[0], URL_SAFE.encode("[]"), parts[2]),
            "malformed_json",
        ),
        (
            "duplicate alg",
            format!(
                "{}.{}.{}",
                URL_SAFE.encode(r#"{"alg":"RS256","alg":"none","kid":"k1"}"#),
                parts[1],
                parts[2]
            ),
            "malformed_json",
        ),
        (
            "space inside",
            format!("{} {}", parts[0], parts[1]),
            "malformed_token",
        ),
    ];
    for (case, token, reason) in cases {
        let outcome = server.check_token(&token).await;
        assert_rejected(&outcome, reason, case);
    }
}

#[tokio::test]
async fn oversized_token_rejected() {
    let (mut server, _dir) = fixture().await;
    let mut claims = claims();
    claims["padding"] = json!("x".repeat(9 * 1024));
    let token = sign(&keys().k1, &claims);
    assert_rejected(
        &server.check_token(&token).await,
        "token_too_large",
        "9 KiB",
    );
}

#[tokio::test]
async fn header_lines_joined_rejected() {
    let (mut server, _dir) = fixture().await;
    let token = sign(&keys().k1, &claims());
    let mut check = request(ORDERS, &[]);
    let http = check
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .expect("http attributes");
    let line = |value: String| envoy_types::pb::envoy::config::core::v3::HeaderValue {
        key: "authorization".to_owned(),
        raw_value: value.into_bytes(),
        ..Default::default()
    };
    http.header_map = Some(envoy_types::pb::envoy::config::core::v3::HeaderMap {
        headers: vec![
            line(format!("Bearer {token}")),
            line(format!("Bearer {token}")),
        ],
    });
    let response = server
        .client
        .check(check)
        .await
        .expect("CheckResponse")
        .into_inner();
    assert_rejected(&outcome(&response), "multiple_tokens", "two header lines");
}

#[tokio::test]
async fn forward_keeps_credential() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let keys = keys();
    let document = jwks(&[&keys.k1]).to_string();
    let manifest = manifest("r1", "        file: keys.json").replace(
        "      leeway_seconds: 60\n",
        "      leeway_seconds: 60\n      forward: true\n      from: {header: x-user-token}\n",
    );
    let bundle =
        write_bundle(dir.path(), &manifest, &[("keys.json", document)]).expect("bundle compiles");
    let mut server = start(bundle).await;

    let token = sign(&keys.k1, &claims());
    let outcome = server.check(ORDERS, &[("x-user-token", &token)]).await;
    assert!(outcome.allowed(), "{outcome:?}");
    assert!(
        !outcome.removed.contains(&"x-user-token".to_owned()),
        "{:?}",
        outcome.removed
    );

    // `authorization` is not read by this provider: its token is ignored.
    let bearer = format!("Bearer {}", sign(&keys.k9, &claims()));
    let outcome = server
        .check("/public/a", &[("authorization", &bearer)])
        .await;
    assert!(outcome.allowed(), "{outcome:?}");
}

#[test]
fn bundle_errors_named() {
    let keys = keys();
    let dir = tempfile::tempdir().expect("temporary directory");
    let duplicate = json!({"keys": [keys.k1.jwk, keys.k1.jwk]}).to_string();
    let error = write_bundle(
        dir.path(),
        &manifest("r1", "        file: keys.json"),
        &[("keys.json", duplicate)],
    )
    .expect_err("duplicate kid rejected");
    assert!(error.contains("two keys have the `kid` `k1`"), "{error}");

    let cases = [
        (
            "algorithms: [RS256, ES256, EdDSA]",
            "algorithms: [HS256]",
            "algorithm `HS256` is not allowed",
        ),
        (
            "algorithms: [RS256, ES256, EdDSA]",
            "algorithms: [none]",
            "unknown algorithm `none`",
        ),
        (
            "leeway_seconds: 60",
            "leeway_seconds: 3600",
            "`leeway_seconds` is 3600",
        ),
        (
            "        file: keys.json",
            "        url: http://keys.example.org/jwks",
            "uses plain http to a remote host",
        ),
        (
            "        file: keys.json",
            "        file: missing.json",
            "`jwks.file` `missing.json` is not",
        ),
    ];
    let good = jwks(&[&keys.k1]).to_string();
    for (from, to, expected) in cases {
        let dir = tempfile::tempdir().expect("temporary directory");
        let manifest = manifest("r1", "        file: keys.json").replace(from, to);
        let error = write_bundle(dir.path(), &manifest, &[("keys.json", good.clone())])
            .expect_err(expected);
        assert!(error.contains(expected), "{expected}: {error}");
    }
}

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as URL_SAFE;
