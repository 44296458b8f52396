//! Benchmark, not a test (ignored; `scripts/bench-slowloris.sh` runs it and prints figures): a
//! normal client's latency while 1,000 slowloris connections are held open.
//!
//! A real `stagely-server` process runs with its default limits. The attacker opens 1,000
//! connections, sends a request line, then one header byte per 10 s on each, and reopens a
//! connection as soon as the server cuts it, so 1,000 are always held. Meanwhile a normal client
//! opens a fresh connection every 100 ms and asks for `/healthz`; the clock runs from connect to
//! the whole answer. `BENCH_SECS` (60) sets how long the attack lasts, `BENCH_SLOW` (1000) how
//! many connections it holds.

use crate::helpers::ServerProcess;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run scripts/bench-slowloris.sh"]
async fn bench_slowloris() {
    let secs: u64 = setting("BENCH_SECS", 60);
    let slow: usize = setting("BENCH_SLOW", 1000);
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(data_dir.path(), None, &[]).await;
    let address = server.address;

    let quiet = normal_client(address, Duration::from_secs(5)).await;

    let cut = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicU64::new(0));
    let attack_ends = tokio::time::Instant::now() + Duration::from_secs(secs + 15);
    let mut attackers = Vec::new();
    for _ in 0..slow {
        let (cut, held) = (cut.clone(), held.clone());
        attackers.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < attack_ends {
                let Ok(mut stream) = TcpStream::connect(address).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if stream.write_all(b"GET / HTTP/1.1\r\n").await.is_err() {
                    continue;
                }
                held.fetch_add(1, Ordering::Relaxed);
                let mut buffer = [0u8; 512];
                loop {
                    tokio::select! {
                        read = stream.read(&mut buffer) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(_) => continue,
                        },
                        () = tokio::time::sleep(Duration::from_secs(10)) => {
                            if stream.write_all(b"X").await.is_err() {
                                break;
                            }
                        }
                        () = tokio::time::sleep_until(attack_ends) => break,
                    }
                }
                held.fetch_sub(1, Ordering::Relaxed);
                if tokio::time::Instant::now() < attack_ends {
                    cut.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Let the attack reach its full size before measuring.
    let ramp = Instant::now();
    while held.load(Ordering::Relaxed) < slow as u64 && ramp.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at_start = held.load(Ordering::Relaxed);
    let attacked = normal_client(address, Duration::from_secs(secs)).await;
    let at_end = held.load(Ordering::Relaxed);
    let cut_count = cut.load(Ordering::Relaxed);
    for attacker in attackers {
        attacker.abort();
    }
    let rss = server_rss_kib(&server);

    println!("slowloris: {slow} connections, one header byte per 10 s each, for {secs} s; server with default limits (header timeout 10 s, idle 60 s, max 10000 connections)");
    println!(
        "  held by the attacker: {at_start} when measuring started, {at_end} at the end; {cut_count} cut by the server's header timeout (and reopened)"
    );
    println!("  normal client, no attack:   {}", quiet.summary());
    println!("  normal client, under attack: {}", attacked.summary());
    println!("  server memory after the attack: {rss}");
}

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Latencies of a normal client asking `/healthz` every 100 ms for `duration`.
async fn normal_client(address: std::net::SocketAddr, duration: Duration) -> Latencies {
    let mut samples = Vec::new();
    let mut failures = 0;
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let started = Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(30), healthz(address))
            .await
            .is_ok_and(|answered| answered.is_ok());
        if answered {
            samples.push(started.elapsed());
        } else {
            failures += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples.sort();
    Latencies { samples, failures }
}

/// `GET /healthz` on a fresh connection; an error (counted as a failure) when it is refused,
/// reset or answered with anything but 200.
async fn healthz(address: std::net::SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(address).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: stagely\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    if answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("not a 200"))
    }
}

struct Latencies {
    samples: Vec<Duration>,
    failures: usize,
}

impl Latencies {
    fn summary(&self) -> String {
        if self.samples.is_empty() {
            return format!("no request served ({} failed)", self.failures);
        }
        let percentile = |p: f64| {
            let n = self.samples.len();
            self.samples[((n as f64 * p).ceil() as usize).clamp(1, n) - 1]
        };
        format!(
            "{} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} failed",
            self.samples.len(),
            ms(percentile(0.50)),
            ms(percentile(0.99)),
            ms(*self.samples.last().unwrap_or(&Duration::ZERO)),
            self.failures
        )
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The server process's peak and current resident memory, from `/proc/<pid>/status`.
pub fn server_rss_kib(server: &ServerProcess) -> String {
    let Some(pid) = server.pid() else {
        return "unknown".into();
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    format!("VmHWM {}, VmRSS {}", field("VmHWM:"), field("VmRSS:"))
}
