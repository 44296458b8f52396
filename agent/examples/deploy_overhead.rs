//! Benchmark: a deploy through the agent's pipeline vs the same raw `docker compose up -d`, on
//! the same two-service project, alternating runs so both see the same machine.
//!
//! `cargo run --release -p agent --example deploy_overhead -- [runs]` (needs dockerd and Compose
//! v2). Each run starts from nothing (`down` first), so both sides create two containers. The
//! agent's deploy is measured with the settle time set to zero, so the figure is the pipeline's
//! own cost (parse, render, override file, `up`, one health poll); the settle time a real deploy
//! adds on top is a fixed, configured wait and is reported separately.

use agent::deploy::{self, DeployOptions, DeployRequest};
use agent::runner::{self, CommandSpec, Redactor};
use agent::system::Compose;
use shared::{EnvKey, ProjectName, Secret, SecretScope, SecretValue};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let image = agent::testing::test_image().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        agent::testing::TWO_IDLE_SERVICES.replace("{image}", image),
    )
    .unwrap();
    let private = tempfile::tempdir().unwrap();
    let name = ProjectName::parse("stagely-bench-overhead").unwrap();
    let secrets = vec![Secret {
        key: EnvKey::parse("DB_PASSWORD").unwrap(),
        value: SecretValue::new("bench-secret"),
        scope: SecretScope::Global,
    }];
    let options = DeployOptions {
        compose: Compose::V2,
        allowed_roots: Vec::new(),
        private_dir: private.path().to_path_buf(),
        up_timeout: Duration::from_secs(120),
        health_timeout: Duration::from_secs(60),
        settle: Duration::ZERO,
        git_max_bytes: agent::git::DEFAULT_MAX_BYTES,
    };
    let compose = |args: &[&str]| {
        let mut argv = vec!["-p", name.as_str()];
        argv.extend_from_slice(args);
        Compose::V2.command(argv).current_dir(dir.path())
    };
    let run = |spec: CommandSpec| async move {
        let output = runner::run(&spec, &Redactor::default(), |_| {})
            .await
            .unwrap();
        assert!(output.success(), "{}", output.stderr);
    };

    let (mut raw, mut agent) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        run(compose(&["down", "-t", "0"])).await;
        let start = Instant::now();
        run(compose(&["up", "-d", "--remove-orphans"])).await;
        raw.push(start.elapsed());

        run(compose(&["down", "-t", "0"])).await;
        let request = DeployRequest {
            project: &name,
            directory: dir.path(),
            compose_file: None,
            secrets: &secrets,
            project_id: None,
            pinned_images: &[],
            pull_policy: Default::default(),
            registry_credentials: &[],
            target: Default::default(),
            secrets_as: Default::default(),
        };
        let start = Instant::now();
        deploy::deploy(&request, &options, |_| {}).await.unwrap();
        agent.push(start.elapsed());
    }
    run(compose(&["down", "-t", "0"])).await;

    let median = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let (raw, agent) = (median(&mut raw), median(&mut agent));
    let ratio = agent.as_secs_f64() / raw.as_secs_f64();
    let budget = raw.mul_f64(1.1) + Duration::from_millis(200);
    println!("runs: {runs} (median of each)");
    println!(
        "raw `docker compose up -d`:        {:>7.0} ms",
        raw.as_secs_f64() * 1e3
    );
    println!(
        "agent deploy (settle 0):           {:>7.0} ms",
        agent.as_secs_f64() * 1e3
    );
    println!(
        "ratio: {ratio:.2}x; target <= 1.1x + 200 ms = {:.0} ms: {}",
        budget.as_secs_f64() * 1e3,
        if agent <= budget { "met" } else { "missed" }
    );
    println!("a real deploy adds the configured settle time (1500 ms) on top");
}
