//! The bundle commands of the `authzd` binary: `bundle build`, `bundle
//! keygen`, `push` and `status`. Each prints its result and returns the exit
//! code.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::ExitCode;

use super::admin::client::{AdminTarget, connect};
use super::admin::proto;
use super::archive;
use super::signature;
use crate::policy::{Bundle, BundleFiles, testing};

/// `authzd bundle build DIR -o FILE [--signing-key KEY]`: checks that the
/// bundle compiles and passes its tests, then writes it as a `.tar.gz`,
/// signed when a key is given.
pub fn build(dir: &Path, output: &Path, signing_key: Option<&Path>) -> ExitCode {
    let files = match BundleFiles::read_dir(dir) {
        Ok(files) => files,
        Err(error) => return report_invalid(dir, &error.errors),
    };
    let bundle = match Bundle::compile(&files) {
        Ok(bundle) => bundle,
        Err(error) => return report_invalid(dir, &error.errors),
    };
    let failures: Vec<String> = testing::run_tests(&bundle)
        .into_iter()
        .filter(|result| !result.passed())
        .map(|result| {
            format!(
                "test `{}` ({}) failed: {}",
                result.name,
                result.file,
                result.failures.join("; ")
            )
        })
        .collect();
    if !failures.is_empty() {
        return report_invalid(dir, &failures);
    }

    let signature = match signing_key {
        None => None,
        Some(path) => match signature::read_signing_key(path) {
            Ok(key) => Some(signature::sign(&files, &key)),
            Err(error) => {
                eprintln!("authzd: {error}");
                return ExitCode::from(2);
            }
        },
    };
    let bytes = match archive::write_archive(&files, signature.as_ref()) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("authzd: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = std::fs::write(output, &bytes) {
        eprintln!("authzd: cannot write `{}`: {error}", output.display());
        return ExitCode::FAILURE;
    }
    println!(
        "wrote {} ({} bytes): bundle {} revision {}, {} files, digest {}{}",
        output.display(),
        bytes.len(),
        bundle.name,
        bundle.revision,
        files.files.len(),
        bundle.digest,
        if signature.is_some() {
            ", signed"
        } else {
            ", unsigned"
        }
    );
    ExitCode::SUCCESS
}

fn report_invalid(dir: &Path, errors: &[String]) -> ExitCode {
    eprintln!("bundle `{}` is invalid:", dir.display());
    for error in errors {
        eprintln!("  {error}");
    }
    ExitCode::FAILURE
}

/// `authzd bundle keygen --out PREFIX`: writes `PREFIX.key` (PKCS#8 PEM,
/// mode 0600) and `PREFIX.pub` (SubjectPublicKeyInfo PEM).
pub fn keygen(prefix: &Path) -> ExitCode {
    let result = (|| {
        let key = signature::generate_signing_key()?;
        let private = signature::signing_key_pem(&key)?;
        let public = signature::verifying_key_pem(&key.verifying_key())?;
        let private_path = with_suffix(prefix, ".key");
        let public_path = with_suffix(prefix, ".pub");

        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&private_path)
            .map_err(|e| format!("cannot create `{}`: {e}", private_path.display()))?;
        file.write_all(private.as_bytes())
            .map_err(|e| format!("cannot write `{}`: {e}", private_path.display()))?;
        std::fs::write(&public_path, public)
            .map_err(|e| format!("cannot write `{}`: {e}", public_path.display()))?;
        println!(
            "wrote {} and {} (key id {})",
            private_path.display(),
            public_path.display(),
            signature::key_id(&key.verifying_key())
        );
        Ok::<(), String>(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("authzd: {error}");
            ExitCode::FAILURE
        }
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// `authzd push FILE.tar.gz`: pushes an archive and prints the result.
/// Exits 1 when the bundle is rejected.
pub fn push(target: &AdminTarget, archive_path: &Path) -> ExitCode {
    let bytes = match std::fs::read(archive_path) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("authzd: cannot read `{}`: {error}", archive_path.display());
            return ExitCode::from(2);
        }
    };
    run_client(async move {
        let mut client = connect(target).await?;
        let response = client
            .push_bundle(proto::PushBundleRequest { archive: bytes })
            .await
            .map_err(|status| format!("push failed: {}: {}", status.code(), status.message()))?
            .into_inner();
        Ok(print_push(&response))
    })
}

fn print_push(response: &proto::PushBundleResponse) -> ExitCode {
    use proto::push_bundle_response::Result as PushResult;
    match response.result() {
        PushResult::Activated => {
            println!(
                "activated bundle {} revision {} (digest {})",
                response.name, response.revision, response.digest
            );
            ExitCode::SUCCESS
        }
        PushResult::Unchanged => {
            println!(
                "unchanged: bundle {} is already active or was pushed before",
                response.digest
            );
            ExitCode::SUCCESS
        }
        PushResult::Rejected | PushResult::Unspecified => {
            println!("rejected; the active bundle stays:");
            for error in &response.errors {
                println!("  {error}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `authzd status`: prints the active bundle and the last rejection.
pub fn status(target: &AdminTarget) -> ExitCode {
    run_client(async move {
        let mut client = connect(target).await?;
        let status = client
            .get_status(proto::GetStatusRequest {})
            .await
            .map_err(|status| format!("status failed: {}: {}", status.code(), status.message()))?
            .into_inner();
        print!("{}", format_status(&status));
        Ok(ExitCode::SUCCESS)
    })
}

/// Formats a status response as `authzd status` prints it.
pub fn format_status(status: &proto::GetStatusResponse) -> String {
    let mut text = String::new();
    match &status.active {
        None => text.push_str("active:   none (NOT_SERVING: every Check is denied)\n"),
        Some(active) => {
            text.push_str(&format!(
                "active:   {} revision {}\n",
                active.name, active.revision
            ));
            text.push_str(&format!("digest:   {}\n", active.digest));
            text.push_str(&format!("source:   {}\n", active.source));
            text.push_str(&format!(
                "loaded:   {}\n",
                format_time(active.loaded_at.as_ref())
            ));
            text.push_str(&format!("rules:    {}\n", active.rules));
        }
    }
    match &status.last_rejection {
        None => text.push_str("last rejection: none\n"),
        Some(rejection) => {
            text.push_str(&format!(
                "last rejection: {} from {}{}\n",
                format_time(rejection.rejected_at.as_ref()),
                rejection.source,
                if rejection.digest.is_empty() {
                    String::new()
                } else {
                    format!(" (digest {})", rejection.digest)
                }
            ));
            for error in &rejection.errors {
                text.push_str(&format!("  {error}\n"));
            }
        }
    }
    if let Some(counts) = &status.counts {
        text.push_str(&format!(
            "activations: {} activated, {} unchanged, rejected: {} load, {} signature, {} compile, {} tests\n",
            counts.activated,
            counts.unchanged,
            counts.rejected_load,
            counts.rejected_signature,
            counts.rejected_compile,
            counts.rejected_tests
        ));
    }
    text
}

fn format_time(time: Option<&prost_types::Timestamp>) -> String {
    time.and_then(|t| {
        chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
    })
    .map_or_else(
        || "unknown".to_owned(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

fn run_client(work: impl Future<Output = Result<ExitCode, String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("authzd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("authzd: {error}");
            ExitCode::FAILURE
        }
    }
}
