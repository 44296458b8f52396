//! A project's deploy target (`compose` or `swarm`) and, for a Swarm stack, how it receives
//! its secrets: set at creation, changed like any other field, stored on both backends, and a
//! name the server does not know refused with a clear message.

use crate::helpers::{spawn_app, TestDb};
use reqwest::Method;
use serde_json::json;
use shared::api::Project;
use shared::target::{DeployTarget, SecretsAs};
use std::time::Duration;

#[tokio::test]
async fn a_projects_target_and_secret_mode_are_stored_changed_and_checked() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (agent, project) = api.shop_project().await;
        assert_eq!(project.target, DeployTarget::Compose, "{}", db.name());
        assert_eq!(project.secrets_as, SecretsAs::Environment);

        let body = json!({"name": "stack", "agent_id": agent.agent.id, "path": "/srv/stack",
            "target": "swarm", "secrets_as": "swarm_secrets"});
        let stack: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
        assert_eq!(stack.target, DeployTarget::Swarm);
        assert_eq!(stack.secrets_as, SecretsAs::SwarmSecrets);
        let read: Project = api
            .expect(Method::GET, &format!("/projects/{}", stack.id), None, 200)
            .await;
        assert_eq!(
            (read.target, read.secrets_as),
            (stack.target, stack.secrets_as)
        );

        // Lifecycle jobs are accepted for a stack as for a Compose project (queued until the
        // agent is there); `down` is still the whole project's.
        for action in ["stop", "start", "restart", "down"] {
            let accepted: serde_json::Value = api
                .expect(
                    Method::POST,
                    &format!("/projects/{}/actions", stack.id),
                    Some(json!({"action": action})),
                    202,
                )
                .await;
            assert!(
                accepted["deployment_id"].is_string(),
                "{action}: {accepted}"
            );
        }
        let (status, answer) = api
            .call(
                Method::POST,
                &format!("/projects/{}/actions", stack.id),
                Some(json!({"action": "down", "service": "web"})),
            )
            .await;
        assert_eq!(status, 400, "{answer}");

        let changed: Project = api
            .expect(
                Method::PATCH,
                &format!("/projects/{}", stack.id),
                Some(json!({"secrets_as": "environment"})),
                200,
            )
            .await;
        assert_eq!(changed.target, DeployTarget::Swarm, "unchanged");
        assert_eq!(changed.secrets_as, SecretsAs::Environment);

        for body in [
            json!({"target": "kubernetes"}),
            json!({"secrets_as": "files"}),
        ] {
            let (status, answer) = api
                .call(
                    Method::PATCH,
                    &format!("/projects/{}", stack.id),
                    Some(body),
                )
                .await;
            assert_eq!(status, 400, "{answer}");
        }
        let after: Project = api
            .expect(Method::GET, &format!("/projects/{}", stack.id), None, 200)
            .await;
        assert_eq!(
            (after.target, after.secrets_as),
            (DeployTarget::Swarm, SecretsAs::Environment)
        );
    }
}

/// A Swarm manager's agent reports the Swarm's nodes: the server keeps them on the agent (both
/// backends), the agents list shows them, and a later report (none: the engine left the
/// Swarm) replaces them.
#[tokio::test]
async fn an_agents_swarm_nodes_are_kept_and_replaced_by_its_next_report() {
    use crate::helpers::{hello, next_message, raw_agent, send_frame};
    use shared::api::AgentSummary;
    use shared::protocol::{budget, Heartbeat, SwarmNodes};
    use shared::target::{NodeRole, SwarmNode};
    use shared::{AgentToServer, ServerToAgent, PROTOCOL_VERSION};

    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (agent, _) = api.shop_project().await;
        let mut socket = raw_agent(&app.stream_url(), &agent.token).await;
        assert!(matches!(
            hello(&mut socket, PROTOCOL_VERSION).await,
            ServerToAgent::Welcome(_)
        ));
        let leader = SwarmNode {
            hostname: "vm".into(),
            role: NodeRole::Manager,
            leader: true,
            availability: "active".into(),
            state: "ready".into(),
            this_node: true,
        };
        let worker = SwarmNode {
            hostname: "worker-1".into(),
            role: NodeRole::Worker,
            leader: false,
            availability: "drain".into(),
            state: "down".into(),
            this_node: false,
        };
        // A hostile agent's oversized host name is cut, not kept whole.
        let huge = SwarmNode {
            hostname: "h".repeat(300_000),
            ..worker.clone()
        };
        let reports = [vec![huge], vec![leader.clone(), worker.clone()], Vec::new()];
        for (seq, nodes) in (1..).zip(reports) {
            send_frame(
                &mut socket,
                &AgentToServer::SwarmNodes(SwarmNodes {
                    nodes: nodes.clone(),
                }),
            )
            .await;
            // Frames are handled in order: once the heartbeat is answered, the nodes are kept.
            send_frame(&mut socket, &AgentToServer::Heartbeat(Heartbeat { seq })).await;
            loop {
                if let ServerToAgent::HeartbeatAck(ack) = next_message(&mut socket).await {
                    if ack.seq == seq {
                        break;
                    }
                }
            }
            let listed: Vec<AgentSummary> = api.expect(Method::GET, "/agents", None, 200).await;
            let mine = listed
                .iter()
                .find(|listed| listed.id == agent.agent.id)
                .expect("the agent is listed");
            if seq == 1 {
                let kept = &mine.swarm_nodes[0].hostname;
                assert!(
                    kept.len() <= budget::HELLO_FIELD,
                    "{} bytes kept",
                    kept.len()
                );
                assert!(kept.starts_with("hhh"), "{kept}");
            } else {
                assert_eq!(mine.swarm_nodes, nodes, "{}", db.name());
            }
        }
    }
}

/// A stack's deployment that recorded its images is run again exactly: the agent gets the
/// Swarm deploy with each service pinned to the image it ran (the agent's side, that the stack
/// then runs those images, is `engine::swarm::an_exact_redeploy_of_a_stack_runs_the_images…`).
#[tokio::test]
async fn an_exact_redeploy_of_a_stack_sends_the_images_it_ran() {
    use crate::helpers::{hello_as, raw_agent};
    use shared::runtime::ServiceImage;
    use shared::ServiceName;

    let app = spawn_app(&TestDb::Sqlite).await;
    let (alice, api) = app.user("alice").await;
    let (agent, _) = api.shop_project().await;
    let stack = swarm_project(&api, &agent).await;
    let (deployment, _) = app.queue_deploy(stack.id, alice.id).await;
    let images = vec![ServiceImage {
        service: ServiceName::parse("web").unwrap(),
        image: "registry.local:5000/web:1".into(),
        image_id: format!("sha256:{}", "ab".repeat(32)),
        repo_digest: Some(format!(
            "registry.local:5000/web@sha256:{}",
            "cd".repeat(32)
        )),
    }];
    app.store()
        .set_deployment_images(deployment, &images)
        .await
        .unwrap();
    let succeeded = shared::api::DeploymentStatus::Succeeded;
    app.store()
        .set_deployment_status(deployment, succeeded, None)
        .await
        .unwrap();
    let redeploy = format!("/deployments/{deployment}/redeploy");

    // An agent from before pinned stacks would deploy the file's images: refused, saying so.
    let mut old = raw_agent(&app.stream_url(), &agent.token).await;
    hello_as(&mut old, "0.2.1").await;
    let (status, answer) = api.call(Method::POST, &redeploy, None).await;
    assert_eq!(status, 409, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("0.2.2 or later"), "{message}");
    drop(old);
    crate::helpers::no_agent_connected(&api).await;

    let mut socket = raw_agent(&app.stream_url(), &agent.token).await;
    hello_as(&mut socket, env!("CARGO_PKG_VERSION")).await;
    let (status, answer) = api.call(Method::POST, &redeploy, None).await;
    assert_eq!(status, 202, "{answer}");
    let job = next_deploy(&mut socket).await;
    assert_eq!(job.target, DeployTarget::Swarm);
    assert_eq!(job.pinned_images, images);
}

/// A hostile (or broken) agent reports, for a deploy it ran, a "registry digest" that is not
/// one: a reference with a line break and YAML after it, meant to land in the override a later
/// exact redeploy writes on another host. The server keeps the image id, which is one, and
/// drops the digest; the redeploy pins by the id alone. Image ids that are not ids make the
/// whole report dropped (the deployment cannot be run again exactly, and says so).
#[tokio::test]
async fn a_registry_digest_that_is_not_one_is_never_recorded_nor_sent_to_an_agent() {
    use crate::helpers::{hello_as, raw_agent, send_frame, wait_for_deployment};
    use shared::protocol::{JobEvent, JobUpdate};
    use shared::runtime::ServiceImage;
    use shared::{AgentToServer, ServiceName};

    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let (agent, _) = api.shop_project().await;
    let stack = swarm_project(&api, &agent).await;
    let mut socket = raw_agent(&app.stream_url(), &agent.token).await;
    hello_as(&mut socket, env!("CARGO_PKG_VERSION")).await;
    let image_id = format!("sha256:{}", "ab".repeat(32));
    let digest = format!("registry.local:5000/web@sha256:{}", "cd".repeat(32));
    let hostile = [
        format!("{digest}\n    privileged: true"),
        format!("registry.local:5000/web@sha256:{}", "zz".repeat(32)),
        "registry.local:5000/web:latest".to_string(),
        format!("Registry.local/WEB@{image_id}"),
        format!("registry.local/web @{image_id}"),
    ];
    for repo_digest in hostile {
        let deploy = format!("/deploy/{}", stack.id);
        let accepted: shared::api::DeployAccepted =
            api.expect(Method::POST, &deploy, None, 202).await;
        let job = next_deploy(&mut socket).await;
        let finished = JobUpdate {
            job_id: job.job_id,
            event: JobEvent::Finished {
                success: true,
                message: "deployed".into(),
                images: vec![ServiceImage {
                    service: ServiceName::parse("web").unwrap(),
                    image: "registry.local:5000/web:1".into(),
                    image_id: image_id.clone(),
                    repo_digest: Some(repo_digest.clone()),
                }],
                checkout: None,
            },
        };
        send_frame(&mut socket, &AgentToServer::JobUpdate(finished)).await;
        let done = wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(10)).await;
        assert_eq!(done.status, shared::api::DeploymentStatus::Succeeded);
        assert_eq!(done.images.len(), 1, "{repo_digest:?}");
        assert_eq!(done.images[0].image_id, image_id, "the id is kept");
        assert_eq!(done.images[0].repo_digest, None, "{repo_digest:?} was kept");

        let redeploy = format!("/deployments/{}/redeploy", accepted.deployment_id);
        let again: shared::api::DeployAccepted =
            api.expect(Method::POST, &redeploy, None, 202).await;
        let job = next_deploy(&mut socket).await;
        assert_eq!(job.pinned_images.len(), 1);
        assert_eq!(
            job.pinned_images[0].repo_digest, None,
            "{repo_digest:?} was sent"
        );
        assert_eq!(job.pinned_images[0].image_id, image_id);
        let failed = JobUpdate {
            job_id: job.job_id,
            event: JobEvent::Finished {
                success: false,
                message: "stopped by the test".into(),
                images: Vec::new(),
                checkout: None,
            },
        };
        send_frame(&mut socket, &AgentToServer::JobUpdate(failed)).await;
        wait_for_deployment(&api, again.deployment_id, Duration::from_secs(10)).await;
    }

    // A well-formed digest is kept (the checks above are not vacuous).
    let deploy = format!("/deploy/{}", stack.id);
    let accepted: shared::api::DeployAccepted = api.expect(Method::POST, &deploy, None, 202).await;
    let job = next_deploy(&mut socket).await;
    let mut images = vec![ServiceImage {
        service: ServiceName::parse("web").unwrap(),
        image: "registry.local:5000/web:1".into(),
        image_id: image_id.clone(),
        repo_digest: Some(digest.clone()),
    }];
    let finished = |images: Vec<ServiceImage>, job_id| JobUpdate {
        job_id,
        event: JobEvent::Finished {
            success: true,
            message: "deployed".into(),
            images,
            checkout: None,
        },
    };
    send_frame(
        &mut socket,
        &AgentToServer::JobUpdate(finished(images.clone(), job.job_id)),
    )
    .await;
    let done = wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(10)).await;
    assert_eq!(done.images[0].repo_digest.as_deref(), Some(digest.as_str()));

    // An image id that is not one: nothing of the report is kept, and the deployment cannot be
    // run again exactly.
    let accepted: shared::api::DeployAccepted = api.expect(Method::POST, &deploy, None, 202).await;
    let job = next_deploy(&mut socket).await;
    images[0].image_id = "sha256:abc\n    privileged: true".into();
    send_frame(
        &mut socket,
        &AgentToServer::JobUpdate(finished(images, job.job_id)),
    )
    .await;
    let done = wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(10)).await;
    assert!(done.images.is_empty(), "{:?}", done.images);
    let redeploy = format!("/deployments/{}/redeploy", accepted.deployment_id);
    let (status, answer) = api.call(Method::POST, &redeploy, None).await;
    assert_eq!(status, 409, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("did not record the images"), "{message}");
}

/// A project named `stack` with target `swarm` on `agent`'s server.
async fn swarm_project(
    api: &crate::helpers::ApiClient,
    agent: &shared::api::AgentCreated,
) -> Project {
    let body = json!({"name": "stack", "agent_id": agent.agent.id, "path": "/srv/stack",
        "target": "swarm"});
    api.expect(Method::POST, "/projects", Some(body), 201).await
}

/// The next deploy job the (raw) agent is sent, skipping other frames.
async fn next_deploy(socket: &mut crate::helpers::RawSocket) -> shared::DeployPayload {
    loop {
        if let shared::ServerToAgent::Deploy(job) = crate::helpers::next_message(socket).await {
            return job;
        }
    }
}
