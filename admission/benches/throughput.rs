//! Load benchmark of the admission server (not a test): the real server in-process over TLS.
//!
//! Closed loop: `CONCURRENCY` HTTP/1.1 keep-alive connections, each sending its next request as
//! soon as the previous answer arrives, for `SECONDS` per endpoint; reports throughput, p50 and
//! p99 for `/healthz` (baseline), `/validate` and `/mutate` in the same run.
//! Open loop: requests are scheduled at a fixed 1,000/s regardless of answers (latency counted
//! from the scheduled time, so queueing is not hidden) and p50/p99/max are reported.
//!
//! Run: `cargo bench -p admission --bench throughput` (env: BENCH_SECONDS, BENCH_CONCURRENCY,
//! BENCH_RATE, BENCH_CLIENT_THREADS). Requests are the fixtures `validate/defaulted_postgres_is_allowed` and
//! `mutate/empty_spec_gets_every_default`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::StatusCode;
use tokio::sync::Mutex;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fixture(path: &str) -> Bytes {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(path);
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&full).expect("fixture"))
            .expect("fixture JSON");
    Bytes::from(serde_json::to_vec(&value).expect("encode"))
}

#[derive(Clone)]
struct Target {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<Bytes>,
}

impl Target {
    fn request(&self) -> http::Request<ClientBody> {
        match &self.body {
            Some(body) => post_json(self.path, body.clone()),
            None => request(self.method, self.path, None, empty()),
        }
    }
}

/// CPU time (ns) used so far by this process's threads whose name starts with `prefix`
/// (Linux `schedstat`; 0 elsewhere).
fn thread_cpu_ns(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
        })
        .sum()
}

struct Stats {
    requests: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut latencies: Vec<Duration>, elapsed: Duration) -> Stats {
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i]
    };
    Stats {
        requests: latencies.len(),
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
        max: latencies.last().copied().unwrap_or_default(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn closed_loop(
    server: &TestServer,
    target: &Target,
    concurrency: usize,
    seconds: u64,
) -> Stats {
    let mut senders = Vec::new();
    for _ in 0..concurrency {
        senders.push(server.h1().await);
    }
    // Warm-up: a few requests per connection.
    for sender in &mut senders {
        for _ in 0..20 {
            let answer = send_h1(sender, target.request()).await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{}: {}",
                target.name,
                answer.text()
            );
        }
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for mut sender in senders {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(64 * 1024);
            while Instant::now() < deadline {
                let sent = Instant::now();
                let answer = send_h1(&mut sender, target.request()).await;
                latencies.push(sent.elapsed());
                if answer.status != StatusCode::OK {
                    panic!("{}: {}", target.name, answer.text());
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    stats(all, start.elapsed())
}

/// Closed loop over HTTP/2 (what the API server negotiates): `connections` connections with
/// `streams` concurrent requests each.
async fn closed_loop_h2(
    server: &TestServer,
    target: &Target,
    connections: usize,
    streams: usize,
    seconds: u64,
) -> Stats {
    let mut senders = Vec::new();
    for _ in 0..connections {
        senders.push(server.h2().await);
    }
    let h2_request = |target: &Target| match &target.body {
        Some(body) => request_h2(
            "POST",
            target.path,
            Some("application/json"),
            full(body.clone()),
        ),
        None => request_h2(target.method, target.path, None, empty()),
    };
    for sender in &mut senders {
        for _ in 0..20 {
            let answer = send_h2(sender, h2_request(target)).await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{}: {}",
                target.name,
                answer.text()
            );
        }
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for sender in &senders {
        for _ in 0..streams {
            let mut sender = sender.clone();
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(64 * 1024);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let answer = send_h2(&mut sender, h2_request(&target)).await;
                    latencies.push(sent.elapsed());
                    assert_eq!(answer.status, StatusCode::OK);
                }
                latencies
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    stats(all, start.elapsed())
}

async fn open_loop(
    server: &TestServer,
    target: &Target,
    rate: u64,
    seconds: u64,
    connections: usize,
) -> Stats {
    let (tx, rx) = tokio::sync::mpsc::channel::<Instant>(100_000);
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let mut sender = server.h1().await;
        let rx = rx.clone();
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let scheduled = { rx.lock().await.recv().await };
                let Some(scheduled) = scheduled else { break };
                let answer = send_h1(&mut sender, target.request()).await;
                latencies.push(scheduled.elapsed());
                assert_eq!(answer.status, StatusCode::OK);
            }
            latencies
        }));
    }
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    // The schedule runs on an OS thread: tokio's timer has 1 ms granularity, which would add up
    // to a millisecond of generator lateness to every latency counted from the scheduled time.
    let dispatcher = std::thread::spawn(move || {
        for i in 0..total {
            let scheduled = start + interval.mul_f64(i as f64);
            if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if tx.blocking_send(scheduled).is_err() {
                break;
            }
        }
    });
    tokio::task::spawn_blocking(move || dispatcher.join())
        .await
        .expect("dispatcher task")
        .expect("dispatcher thread");
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    stats(all, start.elapsed())
}

/// Single-threaded cost of one decision without TLS or HTTP: decode, rules, encode.
fn decision_cost(webhook: admission::review::Webhook, body: &[u8]) -> Duration {
    let catalog = api::catalog::Catalog::builtin();
    let namespaces = admission::namespaces::NamespaceCache::Disabled;
    let iterations = 20_000u32;
    for _ in 0..1_000 {
        let _ = admission::review::review(webhook, body, &catalog, &namespaces);
    }
    let start = Instant::now();
    for _ in 0..iterations {
        let decided = admission::review::review(webhook, body, &catalog, &namespaces);
        assert!(decided.is_ok());
    }
    start.elapsed() / iterations
}

fn main() {
    let seconds: u64 = env_or("BENCH_SECONDS", 5);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 32);
    let rate: u64 = env_or("BENCH_RATE", 1000);
    // The server gets its own runtime, as in production (one worker per core); the load
    // generator runs on a separate runtime so it behaves like another process (the API server)
    // competing for the same cores, instead of stealing the server's worker threads.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()
        .expect("server runtime");
    // One client thread by default: on 2 cores, a second one only oversubscribes the CPU the
    // server is being measured on (BENCH_CLIENT_THREADS=2 shows the difference).
    let client_threads: usize = env_or("BENCH_CLIENT_THREADS", 1);
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .thread_name("client")
        .build()
        .expect("client runtime");
    let server = server_runtime.block_on(TestServer::start());
    let server = client_runtime.block_on(async move {
        let targets = [
            Target { name: "GET /healthz (baseline)", method: "GET", path: "/healthz", body: None },
            Target {
                name: "POST /validate",
                method: "POST",
                path: "/validate",
                body: Some(fixture("validate/defaulted_postgres_is_allowed.request.json")),
            },
            Target {
                name: "POST /mutate",
                method: "POST",
                path: "/mutate",
                body: Some(fixture("mutate/empty_spec_gets_every_default.request.json")),
            },
        ];
        println!(
            "admission server benchmark: TLS 1.3, HTTP/1.1 keep-alive, {} cores, server runtime {} workers, client runtime {client_threads} workers, {}s per run",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            seconds
        );
        println!("\nsingle-threaded decision cost (decode + rules + encode, no TLS/HTTP):");
        for (target, webhook) in [
            (&targets[1], admission::review::Webhook::Validate),
            (&targets[2], admission::review::Webhook::Mutate),
        ] {
            let body = target.body.clone().unwrap_or_default();
            let cost = decision_cost(webhook, &body);
            println!("{:<26} {:>9.1} µs/decision", target.name, cost.as_secs_f64() * 1e6);
        }
        println!("\nclosed loop, {concurrency} connections:");
        println!(
            "{:<26} {:>10} {:>12} {:>9} {:>9} {:>9} {:>14}",
            "endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "server µs/req"
        );
        for target in &targets {
            let cpu_before = thread_cpu_ns("server");
            let s = closed_loop(&server, target, concurrency, seconds).await;
            let cpu = thread_cpu_ns("server").saturating_sub(cpu_before);
            println!(
                "{:<26} {:>10} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>14.1}",
                target.name,
                s.requests,
                s.requests as f64 / s.elapsed.as_secs_f64(),
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                cpu as f64 / 1000.0 / s.requests as f64
            );
        }
        println!("(server µs/req: CPU time of the server runtime's threads, TLS included, per request;\n 2 cores / that = what the server alone could sustain)");
        println!("\nclosed loop over HTTP/2, 4 connections x 8 streams (for comparison):");
        for target in &targets[1..] {
            let s = closed_loop_h2(&server, target, 4, 8, seconds).await;
            println!(
                "{:<26} {:>10} {:>12.0} {:>9.3} {:>9.3} {:>9.3}",
                target.name,
                s.requests,
                s.requests as f64 / s.elapsed.as_secs_f64(),
                ms(s.p50),
                ms(s.p99),
                ms(s.max)
            );
        }
        println!("\nopen loop, {rate} req/s scheduled (latency from scheduled send time), 8 connections:");
        println!("{:<26} {:>10} {:>12} {:>9} {:>9} {:>9}", "endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms");
        for target in &targets {
            let s = open_loop(&server, target, rate, seconds, 8).await;
            println!(
                "{:<26} {:>10} {:>12.0} {:>9.3} {:>9.3} {:>9.3}",
                target.name,
                s.requests,
                s.requests as f64 / s.elapsed.as_secs_f64(),
                ms(s.p50),
                ms(s.p99),
                ms(s.max)
            );
        }
        server
    });
    server_runtime.block_on(server.stop());
}
