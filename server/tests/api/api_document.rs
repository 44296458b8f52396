//! The OpenAPI document tells the truth: what it allows the server accepts, what it forbids
//! the server refuses, and its links lead from a create to operations that exist.
//! `scripts/fuzz-api.sh` checks the same with generated data; these tests check the rules
//! themselves, on the edges of each.

use crate::helpers::{spawn_app, ApiClient, TestDb};
use regex::Regex;
use reqwest::Method;
use serde_json::{json, Value};
use shared::api::{JOIN_TOKEN_MAX_SECS, JOIN_TOKEN_MIN_SECS};
use shared::names::{
    NameRule, AGENT_NAME, COMPOSE_FILE, ENV_KEY, PROJECT_NAME, PROJECT_PATH, SERVICE_NAME,
};
use std::collections::HashSet;

async fn document(api: &ApiClient) -> Value {
    let (status, doc) = api.call(Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    doc
}

/// Whether the document's string schema `schema` allows `value`: its pattern and lengths (in
/// characters, as JSON Schema counts).
fn allows(schema: &Value, value: &str) -> bool {
    let pattern = schema["pattern"].as_str().expect("a pattern");
    let chars = value.chars().count() as u64;
    Regex::new(pattern).unwrap().is_match(value)
        && schema["minLength"].as_u64().is_none_or(|min| chars >= min)
        && schema["maxLength"].as_u64().is_none_or(|max| chars <= max)
}

#[tokio::test]
async fn the_openapi_document_carries_every_names_rule_and_the_numbers_ranges() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let doc = document(&api).await;
    let schemas = &doc["components"]["schemas"];

    let rules: [(&str, &NameRule); 6] = [
        ("ProjectName", &PROJECT_NAME),
        ("EnvKey", &ENV_KEY),
        ("AgentName", &AGENT_NAME),
        ("ProjectPath", &PROJECT_PATH),
        ("ServiceName", &SERVICE_NAME),
        ("ComposeFile", &COMPOSE_FILE),
    ];
    for (name, rule) in rules {
        let schema = &schemas[name];
        assert_eq!(schema["type"], "string", "{name}: {schema}");
        assert_eq!(schema["pattern"], rule.pattern, "{name}: {schema}");
        if rule.trimmed {
            // The pattern bounds the length; whitespace around does not count.
            assert!(schema.get("maxLength").is_none(), "{name}: {schema}");
        } else {
            assert_eq!(schema["minLength"], 1, "{name}: {schema}");
            assert_eq!(schema["maxLength"], rule.max_len, "{name}: {schema}");
        }
    }
    for (body, field, name) in [
        ("CreateProject", "name", "ProjectName"),
        ("CreateProject", "path", "ProjectPath"),
        ("CreateSecret", "key", "EnvKey"),
        ("CreateAgent", "name", "AgentName"),
    ] {
        // With a description of its own, a field's `$ref` sits in an `allOf`; an optional
        // field's (a Git project takes no path) in an `anyOf` with null.
        let field = &schemas[body]["properties"][field];
        let reference = field
            .get("$ref")
            .or_else(|| field["allOf"][0].get("$ref"))
            .unwrap_or(&field["anyOf"][0]["$ref"]);
        assert_eq!(
            reference,
            &json!(format!("#/components/schemas/{name}")),
            "{body}: {field}"
        );
    }

    let expires = &schemas["CreateJoinToken"]["properties"]["expires_in_secs"];
    let types = expires["type"].to_string();
    assert!(
        types.contains("integer") && !types.contains("number"),
        "{expires}"
    );
    assert_eq!(expires["minimum"], JOIN_TOKEN_MIN_SECS, "{expires}");
    assert_eq!(expires["maximum"], JOIN_TOKEN_MAX_SECS, "{expires}");
}

#[tokio::test]
async fn the_server_refuses_exactly_the_names_the_document_forbids() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let doc = document(&api).await;
    let schemas = &doc["components"]["schemas"];
    let (agent, project) = api.shop_project().await;
    let agent_id = agent.agent.id;
    let long = |n: usize| "a".repeat(n);

    let mut cases: Vec<(&str, String, String, Value)> = Vec::new();
    for name in [
        String::new(),
        "Shop".into(),
        "-shop".into(),
        "shop prod".into(),
        "shop\n".into(),
        "shöp".into(),
        long(63),
        long(64),
    ] {
        let body = json!({"name": name, "agent_id": agent_id, "path": "/srv/x"});
        cases.push(("ProjectName", name, "/projects".into(), body));
    }
    for path in [
        String::new(),
        "srv".into(),
        " /srv".into(),
        "/srv/\0x".into(),
        "/srv/my shop".into(),
        format!("/{}", long(4095)),
        format!("/{}", long(4096)),
    ] {
        let body = json!({"name": format!("p{}", path.len()), "agent_id": agent_id, "path": path});
        cases.push(("ProjectPath", path, "/projects".into(), body));
    }
    for key in [
        String::new(),
        "9LIVES".into(),
        "A-B".into(),
        "DB_PASSWORD\n".into(),
        "_X".into(),
        long(256),
        long(257),
    ] {
        let body = json!({"project_id": project.id, "key": key, "value": "v", "scope": "global"});
        cases.push(("EnvKey", key, "/secrets".into(), body));
    }
    for name in [
        String::new(),
        "   ".into(),
        " web-1 ".into(),
        "web\u{7}1".into(),
        "\tBüro\n".into(),
        long(64),
        format!("  {}  ", long(64)),
        long(65),
    ] {
        let body = json!({ "name": name });
        cases.push(("AgentName", name, "/agents".into(), body));
    }

    for (schema, value, path, body) in cases {
        let expected = allows(&schemas[schema], &value);
        let (status, answer) = api.call(Method::POST, &path, Some(body)).await;
        let accepted = status == 201;
        assert!(
            accepted || status == 400,
            "{schema} {value:?}: {status} {answer}"
        );
        assert_eq!(
            accepted, expected,
            "{schema} {value:?}: the document says {expected}, the server answered {status} {answer}"
        );
    }
}

#[tokio::test]
async fn a_join_tokens_lifetime_is_refused_exactly_outside_the_documents_range() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let doc = document(&api).await;
    let expires = &doc["components"]["schemas"]["CreateJoinToken"]["properties"]["expires_in_secs"];
    let (min, max) = (expires["minimum"].as_u64(), expires["maximum"].as_u64());
    let (min, max) = (min.expect("a minimum"), max.expect("a maximum"));
    for (secs, expected) in [
        (json!(min - 1), false),
        (json!(min), true),
        (json!(max), true),
        (json!(max + 1), false),
        (json!(-1), false),
        (json!(90.5), false),
        // JSON Schema's integers include numbers written with a zero fraction.
        (json!(90.0), true),
        (json!("90"), false),
        (json!(null), true),
    ] {
        let (status, answer) = api
            .call(
                Method::POST,
                "/join-tokens",
                Some(json!({ "expires_in_secs": secs })),
            )
            .await;
        assert_eq!(status == 201, expected, "{secs}: {status} {answer}");
        assert!(status == 201 || status == 400, "{secs}: {status} {answer}");
    }
}

#[tokio::test]
async fn a_body_is_an_object_or_the_request_is_refused() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    // serde reads a struct from an array of its fields too; the document says object.
    for body in [json!([]), json!([null, 3600]), json!("web-1"), json!(null)] {
        let (status, answer) = api
            .call(Method::POST, "/join-tokens", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, answer) = api
        .call(Method::POST, "/agents", Some(json!(["web-1"])))
        .await;
    assert_eq!(status, 400, "{answer}");
    // The join token's body is optional: none at all takes the defaults.
    let (status, answer) = api.call(Method::POST, "/join-tokens", None).await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn every_operation_has_its_own_id_and_every_link_leads_to_one() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let doc = document(&api).await;
    let operations: Vec<(&String, &String, &Value)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, methods)| {
            let methods = methods.as_object().unwrap();
            methods.iter().map(move |(method, op)| (path, method, op))
        })
        .collect();
    let mut ids = HashSet::new();
    for (path, method, op) in &operations {
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "{method} {path} has no operationId");
        assert!(ids.insert(id), "{id} names two operations");
    }

    let mut linked = HashSet::new();
    for (path, method, op) in &operations {
        for (status, response) in op["responses"].as_object().unwrap() {
            let Some(links) = response["links"].as_object() else {
                continue;
            };
            assert!(
                status.starts_with('2'),
                "{method} {path}: links on {status}"
            );
            for (name, link) in links {
                let target = link["operationId"].as_str().unwrap();
                let (target_path, _, target_op) = operations
                    .iter()
                    .find(|(_, _, op)| op["operationId"] == target)
                    .unwrap_or_else(|| panic!("{method} {path}: link {name} to nothing"));
                for parameter in link["parameters"].as_object().into_iter().flatten() {
                    let declared = target_op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == *parameter.0);
                    assert!(declared, "{name}: {target_path} takes no {}", parameter.0);
                }
                linked.insert(target.to_string());
            }
        }
    }
    // A create leads to reading, changing and deleting what it made.
    for target in [
        "projects.show",
        "projects.update",
        "projects.delete",
        "projects.create",
        "agents.revoke",
        "secrets.update",
        "secrets.delete",
        "secrets.create",
        "deployments.show",
        "notifications.delete",
    ] {
        assert!(linked.contains(target), "no link leads to {target}");
    }
}
