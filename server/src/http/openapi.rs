//! `GET /api/v1/openapi.json`: the API described as OpenAPI 3.1, built from the same route
//! table as the router, with schemas generated from the very `shared` types the handlers take
//! and return, so the document cannot drift from either: a name's `pattern` and `maxLength`
//! are the constants its check uses (`shared::names`), a number's range is the one the server
//! enforces.
//!
//! [`LINKS`] tie an operation that creates something to the ones that use its id, so a client
//! (or a fuzzer's stateful phase, `scripts/fuzz-api.sh`) follows real ids instead of guessing.

use axum::Json;
use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};
use shared::api::ApiError;

/// One operation as the document shows it.
struct Operation {
    id: String,
    method: String,
    path: &'static str,
    summary: &'static str,
    request: Option<Value>,
    body_required: bool,
    status: String,
    response: Option<Value>,
    query: &'static [(&'static str, &'static str)],
    refusals: &'static [(axum::http::StatusCode, &'static str)],
}

pub async fn document() -> Json<Value> {
    Json(build())
}

/// The whole document, from the API's route table.
pub fn build() -> Value {
    let mut generator: SchemaGenerator = SchemaSettings::openapi3().into_generator();
    let mut schema = |generate: super::SchemaFn| {
        serde_json::to_value(generate(&mut generator)).unwrap_or(Value::Null)
    };
    let operations: Vec<_> = super::routes()
        .into_iter()
        .map(|route| Operation {
            id: route.operation_id,
            method: route.method.as_str().to_ascii_lowercase(),
            path: route.path,
            summary: route.summary,
            request: route.request.map(&mut schema),
            body_required: route.body_required,
            status: route.status.as_u16().to_string(),
            response: route.response.map(&mut schema),
            query: route.query,
            refusals: route.refusals,
        })
        .collect();
    let error = schema(|generator| generator.subschema_for::<ApiError>());

    let links = links(&operations);
    let mut paths = Map::new();
    for operation in operations {
        let mut responses = Map::new();
        let mut success = match operation.response {
            Some(body) => {
                json!({"description": "success", "content": {"application/json": {"schema": body}}})
            }
            None => json!({"description": "success, no body"}),
        };
        if let Some(links) = links.get(&operation.id) {
            success["links"] = links.clone();
        }
        responses.insert(operation.status, success);
        let changes = operation.method != "get";
        let refusals = [
            (400, "invalid input; the message says what to fix"),
            (401, "missing or unknown API token"),
            (
                404,
                "no such thing, or it is not yours (in the path or named in the body)",
            ),
        ]
        .into_iter()
        .chain(changes.then_some((
            409,
            "it conflicts with how things are now (a name taken, an agent not connected, a \
             deployment that did not succeed); the message says what",
        )))
        .chain(
            operation
                .refusals
                .iter()
                .map(|(status, description)| (status.as_u16(), *description)),
        );
        for (status, description) in refusals {
            responses.insert(
                status.to_string(),
                json!({"description": description, "content": {"application/json": {"schema": error}}}),
            );
        }
        let parameters: Vec<Value> = operation
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                // Ids are UUIDs; the others are a secret's version number and a registry host.
                let schema = if name == "version" {
                    json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX})
                } else if name == "registry" {
                    let rule = shared::RegistryHost::RULE;
                    json!({"type": "string", "pattern": rule.pattern, "maxLength": rule.max_len})
                } else {
                    json!({"type": "string", "format": "uuid"})
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .chain(operation.query.iter().map(|(name, kind)| {
                json!({"name": name, "in": "query", "required": false, "schema": {"type": kind}})
            }))
            .collect();
        let mut entry = json!({
            "operationId": operation.id,
            "summary": operation.summary,
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(body) = operation.request {
            entry["requestBody"] = json!({"required": operation.body_required, "content": {"application/json": {"schema": body}}});
        }
        let path = paths.entry(operation.path).or_insert_with(|| json!({}));
        path[operation.method] = entry;
    }

    let schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Stagely API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every call needs `Authorization: Bearer <API token>` (`stagely-server tokens create <login>`). Errors are `{\"error\": {\"code\", \"message\"}}`."
        },
        "servers": [{"url": "/api/v1"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"token": []}],
        "paths": paths,
    })
}

/// Where the id of something just created is used next.
struct Link {
    /// The operation that creates it.
    from: &'static str,
    /// Where the new id is in its answer (a JSON pointer).
    id: &'static str,
    to: Uses,
}

enum Uses {
    /// Every operation under this path, which ends with the id's parameter.
    Path(&'static str),
    /// This field of that operation's body.
    Body(&'static str, &'static str),
}

/// From each create to the reads, changes and deletes of what it created, and to the creates
/// that need its id in their body.
const LINKS: [Link; 9] = [
    Link {
        from: "agents.create",
        id: "/agent/id",
        to: Uses::Path("/agents/{id}"),
    },
    Link {
        from: "agents.create",
        id: "/agent/id",
        to: Uses::Body("projects.create", "agent_id"),
    },
    Link {
        from: "projects.create",
        id: "/id",
        to: Uses::Path("/projects/{id}"),
    },
    Link {
        from: "projects.create",
        id: "/id",
        to: Uses::Path("/deploy/{project_id}"),
    },
    Link {
        from: "projects.create",
        id: "/id",
        to: Uses::Body("secrets.create", "project_id"),
    },
    Link {
        from: "secrets.create",
        id: "/id",
        to: Uses::Path("/secrets/{id}"),
    },
    Link {
        from: "notifications.create",
        id: "/channel/id",
        to: Uses::Path("/notification-channels/{id}"),
    },
    Link {
        from: "deployments.deploy",
        id: "/deployment_id",
        to: Uses::Path("/deployments/{id}"),
    },
    Link {
        from: "projects.act",
        id: "/deployment_id",
        to: Uses::Path("/deployments/{id}"),
    },
];

/// Things under a linked path that its create does not make (with what is under them): a project
/// has no webhook until one is created for it, so its id leads to a 404 there, as it should.
const CREATED_ON_THEIR_OWN: [&str; 1] = ["/projects/{id}/webhook"];

/// The `links` object of each creating operation's success, by its operation id.
fn links(operations: &[Operation]) -> std::collections::HashMap<String, Value> {
    let mut all: std::collections::HashMap<String, Value> = Default::default();
    for link in &LINKS {
        let value = format!("$response.body#{}", link.id);
        let entries = all
            .entry(link.from.to_string())
            .or_insert_with(|| json!({}));
        match link.to {
            Uses::Path(prefix) => {
                let parameter = prefix
                    .rsplit('/')
                    .next()
                    .and_then(|last| last.strip_prefix('{')?.strip_suffix('}'))
                    .unwrap_or("id");
                let under = format!("{prefix}/");
                for target in operations
                    .iter()
                    .filter(|op| op.path == prefix || op.path.starts_with(&under))
                    .filter(|op| {
                        !CREATED_ON_THEIR_OWN
                            .iter()
                            .any(|own| op.path == *own || op.path.starts_with(&format!("{own}/")))
                    })
                {
                    entries[target.id.as_str()] = json!({
                        "operationId": target.id,
                        "parameters": {parameter: value},
                    });
                }
            }
            Uses::Body(target, field) => {
                entries[target] = json!({"operationId": target, "requestBody": {field: value}});
            }
        }
    }
    all
}
