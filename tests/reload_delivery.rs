//! Bundle delivery: archive limits, the HTTP source with ETag against a
//! bundle server on 127.0.0.1, and the admin API on a Unix socket and over
//! mTLS with certificates generated here.

mod reload_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authzd::policy::BundleFiles;
use authzd::reload::admin::client::{AdminTarget, connect};
use authzd::reload::admin::proto::push_bundle_response::Result as PushResult;
use authzd::reload::admin::proto::{GetStatusRequest, PushBundleRequest};
use authzd::reload::admin::{AdminService, Callers, listen};
use authzd::reload::archive::{ArchiveLimits, read_archive, write_archive};
use authzd::reload::http::{HttpSettings, HttpSource};
use authzd::reload::signature;
use authzd::spiffe::SpiffeId;
use ed25519_dalek::SigningKey;
use reload_support::{WAIT, activator, active_revision, bundle, failing_tests_bundle, wait_for};
use tar::EntryType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One raw archive entry: path bytes as written, type, content, link target.
struct RawEntry<'a> {
    path: &'a str,
    kind: EntryType,
    content: &'a [u8],
    link: Option<&'a str>,
}

fn file(path: &'static str, content: &'static [u8]) -> RawEntry<'static> {
    RawEntry {
        path,
        kind: EntryType::Regular,
        content,
        link: None,
    }
}

fn special(path: &'static str, kind: EntryType, link: Option<&'static str>) -> RawEntry<'static> {
    RawEntry {
        path,
        kind,
        content: b"",
        link,
    }
}

/// Writes entries with their path bytes copied into the header unchecked,
/// so the archive can hold what a careful writer would refuse to write.
fn raw_archive(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let name = &mut header.as_gnu_mut().unwrap().name;
        name[..entry.path.len()].copy_from_slice(entry.path.as_bytes());
        header.set_entry_type(entry.kind);
        header.set_size(entry.content.len() as u64);
        header.set_mode(0o644);
        if let Some(link) = entry.link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, entry.content).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

const MANIFEST: &[u8] = b"format: 1\nname: raw\nrevision: r1\n";

#[test]
fn archive_rejects_unsafe_entries() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "absolute path",
            raw_archive(&[file("/bundle.yaml", MANIFEST)]),
            "archive entry `/bundle.yaml` has an absolute path; paths must be relative to the bundle root",
        ),
        (
            "parent entry",
            raw_archive(&[file("../bundle.yaml", MANIFEST)]),
            "archive entry `../bundle.yaml` contains `..`; paths must stay inside the bundle",
        ),
        (
            "nested parent entry",
            raw_archive(&[file("rules/../../x.yaml", b"")]),
            "archive entry `rules/../../x.yaml` contains `..`; paths must stay inside the bundle",
        ),
        (
            "symbolic link",
            raw_archive(&[
                file("bundle.yaml", MANIFEST),
                special("rules.yaml", EntryType::Symlink, Some("/etc/passwd")),
            ]),
            "archive entry `rules.yaml` is a link; bundles may hold only regular files and directories",
        ),
        (
            "hard link",
            raw_archive(&[
                file("bundle.yaml", MANIFEST),
                special("rules.yaml", EntryType::Link, Some("bundle.yaml")),
            ]),
            "archive entry `rules.yaml` is a link; bundles may hold only regular files and directories",
        ),
        (
            "character device",
            raw_archive(&[special("null.yaml", EntryType::Char, None)]),
            "archive entry `null.yaml` is a device or FIFO; bundles may hold only regular files and directories",
        ),
        (
            "fifo",
            raw_archive(&[special("pipe.yaml", EntryType::Fifo, None)]),
            "archive entry `pipe.yaml` is a device or FIFO; bundles may hold only regular files and directories",
        ),
        (
            "duplicate file",
            raw_archive(&[
                file("bundle.yaml", MANIFEST),
                file("./bundle.yaml", MANIFEST),
            ]),
            "archive holds `bundle.yaml` twice",
        ),
        (
            "not gzip",
            b"plain text, not an archive".to_vec(),
            "invalid archive",
        ),
    ];
    for (case, archive, expected) in cases {
        let error = read_archive(&archive, &ArchiveLimits::default()).unwrap_err();
        assert!(
            error.errors[0].starts_with(expected),
            "{case}: expected `{expected}`, got {:?}",
            error.errors
        );
    }
}

#[test]
fn archive_limits_are_enforced() {
    let limits = ArchiveLimits {
        max_compressed_bytes: 64 * 1024,
        max_unpacked_bytes: 1024,
        max_entries: 3,
    };
    let big = vec![b'#'; 2000];
    let big_file = raw_archive(&[RawEntry {
        path: "big.yaml",
        kind: EntryType::Regular,
        content: &big,
        link: None,
    }]);
    let many = raw_archive(&[
        file("a.yaml", b""),
        file("b.yaml", b""),
        file("c.yaml", b""),
        file("d.yaml", b""),
    ]);
    // The tar reader consumes a GNU long name itself, so it counts neither
    // as an entry nor as content. The bound on the decompressed stream
    // still stops it.
    let long_name = format!("{}x.yaml", "a/".repeat(60_000));
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_entry_type(EntryType::Regular);
    builder
        .append_data(&mut header, &long_name, &b""[..])
        .unwrap();
    let long_name_archive = builder.into_inner().unwrap().finish().unwrap();

    let cases: Vec<(&str, Vec<u8>, ArchiveLimits, &str)> = vec![
        (
            "unpacked size",
            big_file,
            limits,
            "archive unpacks to more than 1024 bytes",
        ),
        (
            "entry count",
            many,
            limits,
            "archive holds more than 3 entries",
        ),
        (
            "long name",
            long_name_archive,
            limits,
            "invalid archive: archive decompresses to more than",
        ),
        (
            "compressed size",
            write_archive(&bundle("big", true), None).unwrap(),
            ArchiveLimits {
                max_compressed_bytes: 100,
                ..limits
            },
            "archive is ",
        ),
    ];
    for (case, archive, limits, expected) in cases {
        let error = read_archive(&archive, &limits).unwrap_err();
        assert!(
            error.errors[0].starts_with(expected),
            "{case}: expected `{expected}`, got {:?}",
            error.errors
        );
    }
}

#[test]
fn archive_accepts_usual_layouts() {
    let archive = raw_archive(&[
        special("./", EntryType::Directory, None),
        special("pax_global_header", EntryType::XGlobalHeader, None),
        file("./bundle.yaml", MANIFEST),
        special("./rules/", EntryType::Directory, None),
        file("./rules/a.yaml", b"rules: []\n"),
        file("./README.md", b"not policy"),
        file("./.hidden.yaml", b"skipped like in a directory"),
    ]);
    let loaded = read_archive(&archive, &ArchiveLimits::default()).unwrap();
    let names: Vec<&str> = loaded.files.files.keys().map(String::as_str).collect();
    assert_eq!(names, ["bundle.yaml", "rules/a.yaml"]);
    assert!(loaded.signature.is_none());
}

/// A bundle server on 127.0.0.1 that serves one archive with an ETag and
/// counts full responses and 304 responses.
#[derive(Default)]
struct BundleServer {
    current: Mutex<(Vec<u8>, String)>,
    full: AtomicU64,
    not_modified: AtomicU64,
}

impl BundleServer {
    fn publish(&self, files: &BundleFiles, etag: &str) {
        *self.current.lock().unwrap() =
            (write_archive(files, None).unwrap(), format!("\"{etag}\""));
    }

    async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let request = String::from_utf8_lossy(&request).to_ascii_lowercase();
                let if_none_match = request
                    .lines()
                    .find_map(|line| line.strip_prefix("if-none-match:"))
                    .map(|value| value.trim().to_owned());
                let (body, etag) = server.current.lock().unwrap().clone();

                let response = if if_none_match.as_deref()
                    == Some(etag.to_ascii_lowercase().as_str())
                {
                    server.not_modified.fetch_add(1, Ordering::SeqCst);
                    format!("HTTP/1.1 304 Not Modified\r\netag: {etag}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_bytes()
                } else {
                    server.full.fetch_add(1, Ordering::SeqCst);
                    let mut head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/gzip\r\netag: {etag}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    head.extend_from_slice(&body);
                    head
                };
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_source_uses_etag() {
    let server = Arc::new(BundleServer::default());
    server.publish(&bundle("http-a", true), "etag-a");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server_task = tokio::spawn(server.clone().serve(listener));

    let url = format!("http://{address}/bundle.tar.gz").parse().unwrap();
    let mut settings = HttpSettings::new(url);
    settings.poll_interval = Duration::from_millis(50);
    settings.allow_plain_http = true;
    let activator = activator(None);
    let source = HttpSource::new(settings).unwrap();
    let source_task = tokio::spawn(source.run(activator.clone()));

    assert!(wait_for(WAIT, || active_revision(&activator) == "http-a").await);
    assert!(wait_for(WAIT, || server.not_modified.load(Ordering::SeqCst) >= 3).await);
    assert_eq!(server.full.load(Ordering::SeqCst), 1);
    assert_eq!(activator.counters().snapshot().activated, 1);
    assert_eq!(activator.counters().snapshot().unchanged, 0);

    server.publish(&bundle("http-b", false), "etag-b");
    assert!(wait_for(WAIT, || active_revision(&activator) == "http-b").await);
    assert_eq!(server.full.load(Ordering::SeqCst), 2);
    let status = activator.store().status();
    assert_eq!(
        status.source,
        format!("http:http://{address}/bundle.tar.gz")
    );

    source_task.abort();
    server_task.abort();
}

#[test]
fn http_source_requires_https() {
    let url = "http://127.0.0.1:1/bundle.tar.gz".parse().unwrap();
    let error = HttpSource::new(HttpSettings::new(url)).unwrap_err();
    assert!(error.contains("uses plain HTTP"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_push_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    // A socket file left by a previous run.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());

    let key = SigningKey::from_bytes(&[3; 32]);
    let activator = activator(Some(&key));
    let listener = listen::bind_unix(&path, 0o600).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let service = AdminService::new(activator.clone(), Callers::UnixSocket);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listen::serve_unix(listener, path.clone(), service, async {
        let _ = stopped.await;
    }));

    let target = AdminTarget {
        socket: Some(path.clone()),
        ..Default::default()
    };
    let mut client = connect(&target).await.unwrap();
    let push = |files: BundleFiles, signed: bool| {
        let signature = signed.then(|| signature::sign(&files, &key));
        PushBundleRequest {
            archive: write_archive(&files, signature.as_ref()).unwrap(),
        }
    };

    let response = client
        .push_bundle(push(bundle("unsigned", true), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.result(), PushResult::Rejected);
    assert!(
        response.errors[0].starts_with("bundle is not signed"),
        "{:?}",
        response.errors
    );

    let response = client
        .push_bundle(push(failing_tests_bundle("untested"), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.result(), PushResult::Rejected);
    assert!(
        response.errors[0].contains("test `probe is decided` failed"),
        "{:?}",
        response.errors
    );

    let response = client
        .push_bundle(push(bundle("signed", true), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.result(), PushResult::Activated);
    assert_eq!(response.revision, "signed");

    let status = client
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let active = status.active.clone().unwrap();
    assert_eq!(active.revision, "signed");
    assert_eq!(active.source, "push:unix");
    let rejection = status.last_rejection.clone().unwrap();
    assert_eq!(rejection.source, "push:unix");
    assert!(rejection.errors[0].contains("test `probe is decided` failed"));
    let counts = status.counts.unwrap();
    assert_eq!(
        (
            counts.activated,
            counts.rejected_signature,
            counts.rejected_tests
        ),
        (1, 1, 1)
    );
    let printed = authzd::reload::cli::format_status(&status);
    assert!(
        printed.contains("active:   probe revision signed"),
        "{printed}"
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    assert!(!path.exists(), "the socket file is removed at stop");
}

#[test]
fn unix_socket_keeps_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    std::fs::write(&path, "not a socket").unwrap();
    let error = listen::bind_unix(&path, 0o600).unwrap_err();
    assert!(error.contains("exists and is not a socket"), "{error}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

/// PEM files of a test PKI: a CA, a server certificate for `localhost`,
/// and client certificates with SPIFFE IDs.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_pem) = Pki::ca("authzd test admin CA");
        std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
        Pki { dir, ca }
    }

    fn ca(name: &str) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let certificate = params.self_signed(&key).unwrap();
        (rcgen::Issuer::new(params, key), certificate.pem())
    }

    /// Writes `NAME.pem` and `NAME.key` signed by `issuer` and returns their paths.
    fn issue(
        &self,
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        name: &str,
        dns: Option<&str>,
        uri: Option<&str>,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(dns.map(|d| vec![d.to_owned()]).unwrap_or_default())
                .unwrap();
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.try_into().unwrap()));
        }
        let certificate = params.signed_by(&key, issuer).unwrap();
        let cert_path = self.dir.path().join(format!("{name}.pem"));
        let key_path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, certificate.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn ca_path(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_allows_only_listed_ids() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.issue(&pki.ca, "server", Some("localhost"), None);
    let operator_id = "spiffe://example.org/ops/bundle-pusher";
    let (operator_cert, operator_key) = pki.issue(&pki.ca, "operator", None, Some(operator_id));
    let (intruder_cert, intruder_key) = pki.issue(
        &pki.ca,
        "intruder",
        None,
        Some("spiffe://example.org/ns/shop/sa/frontend"),
    );
    let (other_ca, _) = Pki::ca("another CA");
    let (stranger_cert, stranger_key) = pki.issue(&other_ca, "stranger", None, Some(operator_id));

    let activator = activator(None);
    let tls = listen::server_tls_config(&server_cert, &server_key, &pki.ca_path()).unwrap();
    let allowed = Arc::new(vec![SpiffeId::parse(operator_id).unwrap()]);
    let service = AdminService::new(activator.clone(), Callers::SpiffeIds(allowed));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(listen::serve_tls(
        listener,
        tls,
        service,
        std::future::pending(),
    ));

    let target = |cert: &std::path::Path, key: &std::path::Path| AdminTarget {
        address: Some(format!("https://{address}")),
        ca: Some(pki.ca_path()),
        cert: Some(cert.to_path_buf()),
        key: Some(key.to_path_buf()),
        server_name: Some("localhost".into()),
        ..Default::default()
    };
    let archive = write_archive(&bundle("mtls", true), None).unwrap();

    let mut intruder = connect(&target(&intruder_cert, &intruder_key))
        .await
        .unwrap();
    let denied = intruder
        .push_bundle(PushBundleRequest {
            archive: archive.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "caller `spiffe://example.org/ns/shop/sa/frontend` is not on the admin allow-list"
    );
    let denied = intruder.get_status(GetStatusRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(activator.store().current().is_none());

    // A certificate from another CA fails the handshake, before any call.
    let stranger = match connect(&target(&stranger_cert, &stranger_key)).await {
        Ok(mut client) => client
            .get_status(GetStatusRequest {})
            .await
            .map(|_| ())
            .map_err(|s| s.code()),
        Err(_) => Err(tonic::Code::Unavailable),
    };
    assert!(stranger.is_err(), "a client of another CA was served");

    let mut operator = connect(&target(&operator_cert, &operator_key))
        .await
        .unwrap();
    let response = operator
        .push_bundle(PushBundleRequest { archive })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.result(), PushResult::Activated);
    let status = operator
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.active.unwrap().source, format!("push:{operator_id}"));
    assert_eq!(active_revision(&activator), "mtls");

    server.abort();
}
