//! The `authzd` command: run the server, test a bundle, explain a decision,
//! build and push bundles.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the Check path allocates many
/// small short-lived objects across threads, where glibc malloc spent about
/// a fifth of authzd's CPU time under load (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use authzd::config::{Config, LogFormat};
use authzd::policy::model::TestRequest;
use authzd::policy::testing;
use authzd::policy::{Bundle, Outcome};
use authzd::reload::admin::client::AdminTarget;
use authzd::reload::{Activation, RejectStage};
use authzd::store::BundleStore;

#[derive(Debug, Parser)]
#[command(
    name = "authzd",
    version,
    about = "Envoy external-authorization server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Check server (defaults: 127.0.0.1:9191, bundle `policies/example`).
    Serve {
        /// YAML configuration file, merged over the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Check listener address; overrides `listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Bundle directory; overrides `bundle.directory` and sets
        /// `bundle.source` to `directory`.
        #[arg(long)]
        bundle: Option<PathBuf>,
    },
    /// Build, sign and create keys for bundle archives.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Push a bundle archive to a running authzd through its admin API.
    Push {
        #[command(flatten)]
        target: AdminTarget,
        /// Bundle archive, as `authzd bundle build` writes it.
        archive: PathBuf,
    },
    /// Print the active bundle and the last rejection of a running authzd.
    Status {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Run a bundle's own tests; exits non-zero on any failure.
    Test {
        /// Bundle directory.
        dir: PathBuf,
    },
    /// Decide one request against a bundle and explain each candidate rule.
    Eval {
        /// Bundle directory.
        dir: PathBuf,
        /// YAML or JSON file with a request in the bundle-test format.
        #[arg(long)]
        request: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Check a bundle directory (compile and tests) and write it as a `.tar.gz`.
    Build {
        /// Bundle directory.
        dir: PathBuf,
        /// Archive to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Ed25519 signing key (PKCS#8 PEM); the archive is unsigned without it.
        #[arg(long)]
        signing_key: Option<PathBuf>,
    },
    /// Write a new Ed25519 key pair: PREFIX.key (private) and PREFIX.pub.
    Keygen {
        /// Path prefix of the two key files.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            bundle,
        } => serve(config.as_deref(), listen, bundle),
        Command::Test { dir } => test(&dir),
        Command::Eval { dir, request } => eval(&dir, &request),
        Command::Bundle {
            command:
                BundleCommand::Build {
                    dir,
                    output,
                    signing_key,
                },
        } => authzd::reload::cli::build(&dir, &output, signing_key.as_deref()),
        Command::Bundle {
            command: BundleCommand::Keygen { out },
        } => authzd::reload::cli::keygen(&out),
        Command::Push { target, archive } => authzd::reload::cli::push(&target, &archive),
        Command::Status { target } => authzd::reload::cli::status(&target),
    }
}

/// Keeps the resident set small. mimalloc requests transparent huge pages
/// on its arenas, which made an idle sidecar hold about 14 MiB of 2 MiB
/// pages it barely used (measured with the example bundle; see
/// docs/benchmarks.md).
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes a
    // flag of this process; it touches no memory of ours. A kernel without
    // the flag only costs memory, and logging is not set up yet, so the
    // result is not checked.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn serve(
    config_path: Option<&Path>,
    listen: Option<std::net::SocketAddr>,
    bundle_dir: Option<PathBuf>,
) -> ExitCode {
    let config = match config_path {
        None => Ok(Config::default_config()),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read configuration `{}`: {e}", path.display()))
            .and_then(|text| Config::parse(&text)),
    };
    let mut config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("authzd: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = listen {
        config.listen = Some(listen);
    }
    if let Some(dir) = bundle_dir {
        config.bundle.source = authzd::config::BundleSourceKind::Directory;
        config.bundle.directory = dir;
    }
    init_logging(config.log.format, &config.log.level);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run_server(config))
}

async fn run_server(config: Config) -> ExitCode {
    // Serving starts with no bundle: health reports NOT_SERVING and every
    // Check is denied until the bundle source activates a first bundle.
    let store = Arc::new(BundleStore::new());
    let runtime = match authzd::server::run::Runtime::new(&config, store.clone()) {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let metrics = runtime.metrics.clone();
    let on_activation = move |activation: &Activation, store: &BundleStore| {
        let result = match activation {
            Activation::Activated { .. } => "activated",
            Activation::Unchanged { .. } => "unchanged",
            Activation::Rejected { stage, .. } => match stage {
                RejectStage::Load => "rejected_load",
                RejectStage::Signature => "rejected_signature",
                RejectStage::Compile => "rejected_compile",
                RejectStage::Tests => "rejected_tests",
            },
        };
        metrics.record_activation(result);
        if let Some(bundle) = store.current() {
            metrics.set_active_bundle(&bundle.name, &bundle.revision, &bundle.digest);
        }
    };
    // Key sets of the bundle's JWT providers start loading before the
    // bundle decides its first Check.
    let verifier = runtime.service.verifier().clone();
    let prepare = move |bundle: &Bundle| verifier.prepare(bundle);
    let reloader = match authzd::reload::start(
        &config,
        store,
        Some(Arc::new(on_activation)),
        Some(Arc::new(prepare)),
    )
    .await
    {
        Ok(reloader) => reloader,
        Err(error) => {
            tracing::error!(error, "cannot start bundle delivery");
            return ExitCode::from(2);
        }
    };

    let result = authzd::server::run::run(&config, runtime, shutdown_signal()).await;
    reloader.stop().await;
    tracing::info!("authzd stopped");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "authzd failed");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};

    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops authzd");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "signal received"),
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only for a terminal, so a log file or pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn load_or_report(dir: &Path) -> Option<Bundle> {
    match Bundle::load_dir(dir) {
        Ok(bundle) => Some(bundle),
        Err(error) => {
            eprintln!("bundle `{}` is invalid:", dir.display());
            for problem in &error.errors {
                eprintln!("  {problem}");
            }
            None
        }
    }
}

fn test(dir: &Path) -> ExitCode {
    let Some(bundle) = load_or_report(dir) else {
        return ExitCode::FAILURE;
    };

    let results = testing::run_tests(&bundle);
    let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
    for result in &failed {
        println!("FAIL {} ({})", result.name, result.file);
        for failure in &result.failures {
            println!("  {failure}");
        }
        println!("  rule trace:");
        if result.trace.is_empty() {
            println!("    no candidate rule for this host and path");
        }
        for entry in &result.trace {
            println!("    {}: {}", entry.rule, entry.outcome);
        }
    }
    println!(
        "bundle {} revision {}: {} passed, {} failed",
        bundle.name,
        bundle.revision,
        results.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn eval(dir: &Path, request_path: &Path) -> ExitCode {
    let Some(bundle) = load_or_report(dir) else {
        return ExitCode::FAILURE;
    };
    let request: TestRequest = match std::fs::read_to_string(request_path)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_yaml_ng::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(request) => request,
        Err(error) => {
            eprintln!("cannot read request `{}`: {error}", request_path.display());
            return ExitCode::from(2);
        }
    };
    let (check, claims) = match testing::build_check(&request) {
        Ok(built) => built,
        Err(error) => {
            eprintln!("invalid request `{}`: {error}", request_path.display());
            return ExitCode::from(2);
        }
    };

    let user = testing::user_source(claims, &bundle);
    let mut trace = Vec::new();
    let evaluation = authzd::engine::decide(
        &bundle,
        &check,
        &user,
        authzd::engine::RequestLimits::default(),
        Some(&mut trace),
    );
    let decision = &evaluation.decision;

    println!("decision: {}", decision.decision_str());
    println!(
        "reason:   {} ({})",
        decision.reason,
        decision.reason.message()
    );
    println!("rule:     {}", decision.rule.as_deref().unwrap_or("-"));
    println!("revision: {}", decision.revision);
    if let Some(detail) = &decision.detail {
        println!("detail:   {detail}");
    }
    println!("candidate rules:");
    if trace.is_empty() {
        println!("  none: no rule's host and path patterns match this request");
    }
    for entry in &trace {
        let effect = match entry.effect {
            authzd::policy::model::Effect::Allow => "allow",
            authzd::policy::model::Effect::Deny => "deny",
        };
        let marker = if entry.outcome == Outcome::Matched {
            "+"
        } else {
            "-"
        };
        println!("  {marker} {} [{effect}]: {}", entry.rule, entry.outcome);
    }
    ExitCode::SUCCESS
}
