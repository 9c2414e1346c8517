//! Load benchmark: authzd against the floor, in the same run.
//!
//! `cargo bench --bench load` starts two servers on 127.0.0.1, each in its
//! own process: authzd (the release binary) with a generated bundle of 1,000
//! rules, and a floor server that answers every Check with OK without
//! looking at it. The same closed-loop gRPC load (this process, a tonic
//! client) drives each in turn at fixed concurrency levels for a bounded
//! time with a realistic CheckRequest: about 15 headers, a bearer token the
//! server has cached after the first request, and a SPIFFE principal.
//!
//! For each server and level it reports throughput, latency percentiles and
//! the server's CPU time per Check, read from `/proc/PID/stat` before and
//! after the run, then authzd's ratios to the floor. It then reports
//! authzd's resident memory idle and under load for bundles of 10, 1,000
//! and 100,000 rules.
//!
//! Environment: `AUTHZD_LOAD_SECONDS` (default 10) per measurement,
//! `AUTHZD_LOAD_CONCURRENCY` (default `1,16,64`), `AUTHZD_LOAD_MEMORY=0` to
//! skip the memory runs.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tonic::transport::{Channel, Endpoint};

mod support;

/// The same allocator as the authzd binary, so the floor is not slowed by a
/// different one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROLE_VARIABLE: &str = "AUTHZD_BENCH_ROLE";
const CONNECTIONS: usize = 4;
const WARM_UP: Duration = Duration::from_secs(1);

fn main() {
    if std::env::var(ROLE_VARIABLE).as_deref() == Ok("floor") {
        run_floor_server();
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let seconds: u64 = env_or("AUTHZD_LOAD_SECONDS", 10);
    let levels: Vec<usize> = std::env::var("AUTHZD_LOAD_CONCURRENCY")
        .unwrap_or_else(|_| "1,16,64".to_owned())
        .split(',')
        .filter_map(|level| level.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(compare(Duration::from_secs(seconds), &levels));
    if std::env::var("AUTHZD_LOAD_MEMORY").as_deref() != Ok("0") {
        runtime.block_on(memory(Duration::from_secs(seconds.min(5))));
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The floor: decodes the CheckRequest (tonic must) and answers OK.
#[derive(Default)]
struct Floor;

#[tonic::async_trait]
impl Authorization for Floor {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse {
            status: Some(RpcStatus {
                code: 0,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

fn run_floor_server() {
    let address: std::net::SocketAddr = std::env::var("AUTHZD_BENCH_ADDRESS")
        .expect("address")
        .parse()
        .expect("socket address");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        // The same transport settings as authzd, so only the work differs.
        authzd::server::grpc_server(1024)
            .add_service(AuthorizationServer::new(Floor).max_decoding_message_size(16 << 20))
            .serve(address)
            .await
            .expect("floor server");
    });
}

/// A server process that is killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    address: std::net::SocketAddr,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}

fn start_floor() -> Server {
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(std::env::current_exe().expect("own executable"))
        .env(ROLE_VARIABLE, "floor")
        .env("AUTHZD_BENCH_ADDRESS", address.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("floor server starts");
    Server {
        name: "floor",
        child,
        address,
        _dir: None,
    }
}

fn start_authzd(rules: usize) -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    support::write_bench_bundle(dir.path(), rules);
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {address}\nadmin: {{listen: null}}\nbundle: {{directory: {}}}\ndecision_log: {{output: /dev/null}}\nlog: {{level: warn}}\n",
            dir.path().join("bundle").display()
        ),
    )
    .expect("config written");
    let child = Command::new(env!("CARGO_BIN_EXE_authzd"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .expect("authzd starts");
    Server {
        name: "authzd",
        child,
        address,
        _dir: Some(dir),
    }
}

async fn connect(address: std::net::SocketAddr) -> Vec<AuthorizationClient<Channel>> {
    let endpoint = Endpoint::try_from(format!("http://{address}"))
        .expect("endpoint")
        .tcp_nodelay(true);
    for _ in 0..500 {
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            match endpoint.connect().await {
                Ok(channel) => clients.push(AuthorizationClient::new(channel)),
                Err(_) => break,
            }
        }
        if clients.len() == CONNECTIONS {
            return clients;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {address}");
}

/// User and system CPU time of a process, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5); here indexes 11 and 12.
    let total = ticks(11) + ticks(12);
    let per_second = clock_ticks_per_second();
    Duration::from_nanos(total * 1_000_000_000 / per_second)
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// Resident and peak resident memory of a process in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[derive(Debug, Clone, Copy, Default)]
struct Measurement {
    errors: u64,
    throughput: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    cpu_us_per_check: f64,
}

/// Runs `concurrency` closed-loop callers for `duration` and measures.
async fn measure(
    server: &Server,
    clients: &[AuthorizationClient<Channel>],
    request: &CheckRequest,
    concurrency: usize,
    duration: Duration,
) -> Measurement {
    // Warm up: connections, the token cache and the allocator.
    drive(clients, request, concurrency, WARM_UP).await;

    let cpu_before = cpu_time(server.pid());
    let started = Instant::now();
    let (mut latencies, errors) = drive(clients, request, concurrency, duration).await;
    let elapsed = started.elapsed();
    let cpu = cpu_time(server.pid()).saturating_sub(cpu_before);

    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        latencies.get(index).copied().unwrap_or(0) as f64 / 1000.0
    };
    let checks = latencies.len() as u64;
    Measurement {
        errors,
        throughput: checks as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        p999_us: percentile(0.999),
        cpu_us_per_check: cpu.as_secs_f64() * 1e6 / checks.max(1) as f64,
    }
}

/// The closed loop: each caller sends its next Check when the previous one
/// is answered. Returns latencies in nanoseconds and the count of answers
/// that were errors or not OK.
async fn drive(
    clients: &[AuthorizationClient<Channel>],
    request: &CheckRequest,
    concurrency: usize,
    duration: Duration,
) -> (Vec<u64>, u64) {
    let deadline = Instant::now() + duration;
    let request = Arc::new(request.clone());
    let mut callers = Vec::with_capacity(concurrency);
    for caller in 0..concurrency {
        let mut client = clients[caller % clients.len()].clone();
        let request = request.clone();
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let answer = client.check((*request).clone()).await;
                let latency = sent.elapsed();
                match answer {
                    Ok(response)
                        if response
                            .get_ref()
                            .status
                            .as_ref()
                            .is_some_and(|s| s.code == 0) =>
                    {
                        latencies.push(latency.as_nanos() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for caller in callers {
        let (latencies, caller_errors) = caller.await.expect("caller task");
        all.extend(latencies);
        errors += caller_errors;
    }
    (all, errors)
}

async fn compare(duration: Duration, levels: &[usize]) {
    let request = support::bench_request();
    let floor = start_floor();
    let authzd = start_authzd(1_000);
    let floor_clients = connect(floor.address).await;
    let authzd_clients = connect(authzd.address).await;

    println!(
        "load: {} s per run, {CONNECTIONS} HTTP/2 connections, bundle of 1000 rules, {} cores",
        duration.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| concurrency | server | Checks/s | p50 µs | p99 µs | p99.9 µs | CPU µs/Check | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &concurrency in levels {
        let base = measure(&floor, &floor_clients, &request, concurrency, duration).await;
        let ours = measure(&authzd, &authzd_clients, &request, concurrency, duration).await;
        for (server, m) in [(&floor, base), (&authzd, ours)] {
            println!(
                "| {concurrency} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {} |",
                server.name,
                m.throughput,
                m.p50_us,
                m.p99_us,
                m.p999_us,
                m.cpu_us_per_check,
                m.errors
            );
        }
        println!(
            "| {concurrency} | authzd/floor | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | |",
            ours.throughput / base.throughput,
            ours.p50_us / base.p50_us,
            ours.p99_us / base.p99_us,
            ours.p999_us / base.p999_us,
            ours.cpu_us_per_check / base.cpu_us_per_check,
        );
    }
}

async fn memory(duration: Duration) {
    let request = support::bench_request();
    println!();
    println!(
        "memory: authzd resident set, KiB (load: concurrency 64 for {} s)",
        duration.as_secs()
    );
    println!("| rules | idle RSS | RSS under load | peak RSS |");
    println!("|---|---|---|---|");
    for rules in [10usize, 1_000, 100_000] {
        let server = start_authzd(rules);
        let clients = connect(server.address).await;
        // An allowed Check proves the bundle is active before measuring idle;
        // a large bundle takes a few seconds to activate.
        let mut client = clients[0].clone();
        let mut active = false;
        for _ in 0..1_200 {
            let answer = client.check(request.clone()).await;
            if answer.is_ok_and(|r| r.get_ref().status.as_ref().is_some_and(|s| s.code == 0)) {
                active = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(active, "the {rules}-rule bundle never became active");
        let (idle, _) = memory_kib(server.pid());
        let _ = measure(&server, &clients, &request, 64, duration).await;
        let (loaded, peak) = memory_kib(server.pid());
        println!("| {rules} | {idle} | {loaded} | {peak} |");
    }
}
