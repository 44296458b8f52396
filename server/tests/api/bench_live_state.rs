//! Benchmark, not a test (ignored; `scripts/bench-live-state.sh` runs it and prints figures):
//! how long a container's death takes to reach a dashboard tab, one at a time and 100 at once.
//!
//! A real agent follows `docker events` for a deployed project of 100 idle services; a tab's
//! live feed (`/api/v1/events`) is open. The clock starts when `docker kill` returns (the
//! container is dead) and stops when the feed delivers the project's states with that
//! container exited — what the Project page renders from.

use crate::helpers::{spawn_app, wait_for_deployment, HostProject, RawSocket, TestDb};
use reqwest::Method;
use shared::api::{DashboardEvent, DeployAccepted, DeploymentStatus};
use shared::runtime::{ContainerStatus, ServiceState};
use shared::ProjectId;
use std::time::{Duration, Instant};

const SERVICES: usize = 100;
const SINGLE_KILLS: usize = 40;

#[tokio::test]
#[ignore = "a benchmark: run scripts/bench-live-state.sh"]
async fn bench_live_state() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (alice, api) = app.user("alice").await;
    let (agent, _process) = api.connected_agent(&app.url(), app.data_dir.path()).await;
    let mut compose = String::from("services:\n");
    for n in 0..SERVICES {
        compose.push_str(&format!(
            "  s{n}:\n    image: {{image}}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
        ));
    }
    let host = HostProject::new(&compose).await;
    let project = api.create_project(&agent, &host).await;
    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
        .await;
    let deployed =
        wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(600)).await;
    assert_eq!(
        deployed.status,
        DeploymentStatus::Succeeded,
        "{:?}",
        deployed.message
    );
    let mut feed = app.feed(&alice).await;

    let mut single = Vec::with_capacity(SINGLE_KILLS);
    for round in 0..SINGLE_KILLS {
        let service = format!("s{}", round % SERVICES);
        let container = format!("{}-{service}-1", host.name);
        docker(&["kill", &container]);
        let killed = Instant::now();
        wait_until(&mut feed, project.id, |states| {
            states.iter().any(|state| {
                state.service.as_str() == service && state.status == ContainerStatus::Exited
            })
        })
        .await;
        single.push(killed.elapsed());
        docker(&["start", &container]);
        wait_until(&mut feed, project.id, |states| {
            states.iter().any(|state| {
                state.service.as_str() == service && state.status == ContainerStatus::Running
            })
        })
        .await;
    }

    let all: Vec<String> = (0..SERVICES)
        .map(|n| format!("{}-s{n}-1", host.name))
        .collect();
    let mut args = vec!["kill"];
    args.extend(all.iter().map(String::as_str));
    let started = Instant::now();
    docker(&args);
    let killed = started.elapsed();
    wait_until(&mut feed, project.id, |states| {
        states.len() == SERVICES
            && states
                .iter()
                .all(|state| state.status == ContainerStatus::Exited)
    })
    .await;
    let every_row = started.elapsed();

    single.sort();
    let percentile =
        |p: f64| single[((single.len() as f64 * p).ceil() as usize).clamp(1, single.len()) - 1];
    println!("live state: {SERVICES} services, {SINGLE_KILLS} single kills");
    println!(
        "  one container killed -> tab has it exited: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(percentile(0.50)),
        ms(percentile(0.99)),
        ms(*single.last().unwrap())
    );
    println!(
        "  all {SERVICES} killed with one `docker kill` (which took {:.0} ms: the engine stops them one by one) -> every row exited {:.0} ms after it returned ({:.0} ms after it started)",
        ms(killed),
        ms(every_row.saturating_sub(killed)),
        ms(every_row)
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn docker(args: &[&str]) {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(output.status.success(), "docker {args:?}: {output:?}");
}

/// Reads the feed until `project`'s states pass `check` (at most 30 s).
async fn wait_until(
    feed: &mut RawSocket,
    project: ProjectId,
    check: impl Fn(&[ServiceState]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match crate::helpers::next_event_within(feed, left).await {
            Some(DashboardEvent::ServiceStates {
                project_id,
                containers,
            }) if project_id == project && check(&containers) => return,
            Some(_) => continue,
            None => panic!("the feed did not bring the expected states within 30 s"),
        }
    }
}
