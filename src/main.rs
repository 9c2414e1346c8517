//! The `authzd` command: run the server, test a bundle, explain a decision.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use authzd::config::{Config, LogFormat};
use authzd::policy::model::TestRequest;
use authzd::policy::testing;
use authzd::policy::{Bundle, Outcome};
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
        /// Bundle directory; overrides `bundle.directory`.
        #[arg(long)]
        bundle: Option<PathBuf>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            bundle,
        } => serve(config.as_deref(), listen, bundle),
        Command::Test { dir } => test(&dir),
        Command::Eval { dir, request } => eval(&dir, &request),
    }
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
    let store = Arc::new(BundleStore::new());
    let source = config.bundle.directory.display().to_string();
    match Bundle::load_dir(&config.bundle.directory) {
        Ok(bundle) => {
            tracing::info!(
                bundle = &*bundle.name,
                revision = &*bundle.revision,
                digest = &*bundle.digest,
                rules = bundle.rules.len(),
                source,
                "bundle activated"
            );
            store.activate_from(Arc::new(bundle), &source);
        }
        Err(error) => {
            // Serving goes on, NOT_SERVING and denying every Check, so the
            // probes show why instead of a restart loop.
            for problem in &error.errors {
                tracing::error!(source, problem, "bundle rejected");
            }
            store.record_rejection(&source, error.errors);
        }
    }

    let runtime = match authzd::server::run::Runtime::new(&config, store) {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    if let Some(bundle) = runtime.store.current() {
        runtime
            .metrics
            .set_active_bundle(&bundle.name, &bundle.revision, &bundle.digest);
        runtime.metrics.record_activation("activated");
    }

    match authzd::server::run::run(&config, runtime, shutdown_signal()).await {
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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
