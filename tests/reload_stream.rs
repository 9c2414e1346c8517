//! Reload under load: concurrent clients send Checks to the real server on
//! 127.0.0.1 while the bundle in a watched directory is replaced 50 times,
//! then an invalid and a wrongly signed bundle are pushed. No Check may fail
//! at the transport and every response must match the bundle its revision
//! names.

mod reload_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use authzd::decision::Reason;
use authzd::reload::admin::client::{AdminTarget, connect};
use authzd::reload::admin::proto::push_bundle_response::Result as PushResult;
use authzd::reload::admin::proto::{GetStatusRequest, PushBundleRequest};
use authzd::reload::admin::{AdminService, Callers, listen};
use authzd::reload::archive::write_archive;
use authzd::reload::signature;
use authzd::reload::watch::{self, FileBundle, WatchSettings};
use ed25519_dalek::SigningKey;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use reload_support::{
    WAIT, activator, active_revision, bundle, check_request, decision_and_revision, invalid_bundle,
    wait_for, write_dir,
};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const CLIENTS: usize = 4;
const SWAPS: u32 = 50;
/// Upper bound of Checks per client, so the loop ends even if the stop
/// flag is never set.
const MAX_CHECKS_PER_CLIENT: u64 = 1_000_000;

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    checks: u64,
    transport_errors: Vec<String>,
    mismatches: Vec<String>,
    revisions: BTreeMap<String, u64>,
}

/// The decision each revision must give the fixed request.
fn expected_decision(revision: &str) -> Option<&'static str> {
    match revision {
        "rev-a" => Some("allow"),
        "rev-b" => Some("deny"),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_survive_reloads() {
    let key = SigningKey::from_bytes(&[11; 32]);
    let other_key = SigningKey::from_bytes(&[12; 32]);
    let activator = activator(Some(&key));
    let store = activator.store().clone();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(authzd::server::serve_tcp(listener, store.clone(), async {
        let _ = server_stopped.await;
    }));
    let endpoint = format!("http://{address}");

    // Before any bundle: NOT_SERVING, and a Check is denied.
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let serving = |health: &mut HealthClient<tonic::transport::Channel>| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .status()
        }
    };
    assert_eq!(serving(&mut health).await, ServingStatus::NotServing);
    let mut client = AuthorizationClient::connect(endpoint.clone())
        .await
        .unwrap();
    let response = client.check(check_request()).await.unwrap().into_inner();
    let metadata = response.dynamic_metadata.as_ref().unwrap();
    let reason = match &metadata.fields["reason"].kind {
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => s.clone(),
        other => panic!("reason is {other:?}"),
    };
    assert_eq!(reason, Reason::NoActiveBundle.as_str());

    // The watched directory, with signed bundles.
    let dir = tempfile::tempdir().unwrap();
    let install = |revision: &str| {
        let files = bundle(revision, revision == "rev-a");
        let signature = signature::sign(&files, &key);
        write_dir(dir.path(), &files, Some(&signature));
    };
    install("rev-a");
    let settings = WatchSettings {
        debounce: Duration::from_millis(50),
        check_interval: Duration::from_secs(2),
    };
    let watcher = tokio::spawn(watch::run(
        activator.clone(),
        FileBundle::Directory(dir.path().into()),
        settings,
    ));
    assert!(wait_for(WAIT, || active_revision(&activator) == "rev-a").await);
    let mut became_serving = false;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if serving(&mut health).await == ServingStatus::Serving {
            became_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        became_serving,
        "health did not report SERVING after activation"
    );

    // Clients, each on its own connection, until the stop flag is set.
    let stop = Arc::new(AtomicBool::new(false));
    let test_deadline = Instant::now() + Duration::from_secs(240);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let stop = stop.clone();
        let mut client = AuthorizationClient::connect(endpoint.clone())
            .await
            .unwrap();
        clients.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed)
                && tally.checks < MAX_CHECKS_PER_CLIENT
                && Instant::now() < test_deadline
            {
                tally.checks += 1;
                match client.check(check_request()).await {
                    Err(status) => tally.transport_errors.push(status.to_string()),
                    Ok(response) => {
                        let (decision, revision) = decision_and_revision(response.get_ref());
                        if expected_decision(&revision) != Some(decision.as_str()) {
                            tally
                                .mismatches
                                .push(format!("revision `{revision}` decided `{decision}`"));
                        }
                        *tally.revisions.entry(revision).or_default() += 1;
                    }
                }
            }
            tally
        }));
    }

    // Replace the bundle 50 times, waiting for each to become active.
    for swap in 1..=SWAPS {
        let revision = if swap % 2 == 1 { "rev-b" } else { "rev-a" };
        install(revision);
        assert!(
            wait_for(WAIT, || active_revision(&activator) == revision).await,
            "swap {swap} to `{revision}` not activated"
        );
    }
    let activated = activator.counters().snapshot().activated;
    assert!(activated > u64::from(SWAPS), "only {activated} activations");

    // An invalid bundle and a wrongly signed one, pushed over the admin API.
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("admin.sock");
    let admin_listener = listen::bind_unix(&socket, 0o600).unwrap();
    let service = AdminService::new(activator.clone(), Callers::UnixSocket);
    let admin = tokio::spawn(listen::serve_unix(
        admin_listener,
        socket.clone(),
        service,
        std::future::pending(),
    ));
    let mut admin_client = connect(&AdminTarget {
        socket: Some(socket.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let active_before = active_revision(&activator);

    let invalid = invalid_bundle("rev-invalid");
    let archive = write_archive(&invalid, Some(&signature::sign(&invalid, &key))).unwrap();
    let response = admin_client
        .push_bundle(PushBundleRequest { archive })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.result(), PushResult::Rejected);
    assert!(
        response.errors[0].contains("invalid path `no-leading-slash`"),
        "{:?}",
        response.errors
    );
    let status = admin_client
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let rejection = status.last_rejection.unwrap();
    assert_eq!(rejection.source, "push:unix");
    assert!(rejection.errors[0].contains("invalid path `no-leading-slash`"));

    let forged = bundle("rev-forged", true);
    let archive = write_archive(&forged, Some(&signature::sign(&forged, &other_key))).unwrap();
    let response = admin_client
        .push_bundle(PushBundleRequest { archive })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.result(), PushResult::Rejected);
    let status = admin_client
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let rejection = status.last_rejection.unwrap();
    assert!(
        rejection.errors[0].starts_with("signature does not verify with the configured key"),
        "{:?}",
        rejection.errors
    );
    assert_eq!(status.active.unwrap().revision, active_before);

    // Let the clients see the state after the pushes, then stop them.
    let counted = activator.counters().clone();
    let settled = counted.snapshot();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for client in clients {
        let tally = client.await.unwrap();
        total.checks += tally.checks;
        total.transport_errors.extend(tally.transport_errors);
        total.mismatches.extend(tally.mismatches);
        for (revision, count) in tally.revisions {
            *total.revisions.entry(revision).or_default() += count;
        }
    }

    eprintln!("{} checks by revision: {:?}", total.checks, total.revisions);
    assert!(
        total.transport_errors.is_empty(),
        "transport errors: {:?}",
        &total.transport_errors[..total.transport_errors.len().min(5)]
    );
    assert!(
        total.mismatches.is_empty(),
        "mismatches: {:?}",
        &total.mismatches[..total.mismatches.len().min(5)]
    );
    let revisions: Vec<&str> = total.revisions.keys().map(String::as_str).collect();
    assert_eq!(
        revisions,
        ["rev-a", "rev-b"],
        "revisions seen: {:?}",
        total.revisions
    );
    assert!(total.checks > CLIENTS as u64);
    assert_eq!(active_revision(&activator), active_before);
    assert_eq!(counted.snapshot().activated, settled.activated);

    watcher.abort();
    admin.abort();
    let _ = stop_server.send(());
    server.await.unwrap().unwrap();
}
