//! `GET /api/v1/openapi.json`: the API described as OpenAPI 3.1, its schemas generated from the
//! very `shared` types the handlers take and return, so the document cannot drift from them.

use axum::Json;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};
use shared::api::{
    AgentCreated, AgentSummary, ApiError, CreateAgent, CreateJoinToken, CreateProject,
    CreateSecret, DeployAccepted, Deployment, JoinTokenCreated, Project, RevealedSecret,
    SecretSummary, UpdateProject, UpdateSecret,
};

/// One operation: method, path, summary, request body, success status and body.
struct Operation {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<Value>,
    status: &'static str,
    response: Option<Value>,
}

pub async fn document() -> Json<Value> {
    Json(build())
}

/// The whole document.
pub fn build() -> Value {
    let mut generator: SchemaGenerator = SchemaSettings::openapi3().into_generator();
    let mut schema = |generate: fn(&mut SchemaGenerator) -> schemars::Schema| {
        serde_json::to_value(generate(&mut generator)).unwrap_or(Value::Null)
    };
    fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<T>()
    }
    fn list_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<Vec<T>>()
    }
    let op = |method, path, summary, request, status, response| Operation {
        method,
        path,
        summary,
        request,
        status,
        response,
    };
    let operations = vec![
        op(
            "post",
            "/agents",
            "Register an agent; the token is returned only here",
            Some(schema(of::<CreateAgent>)),
            "201",
            Some(schema(of::<AgentCreated>)),
        ),
        op(
            "get",
            "/agents",
            "List agents with their live status",
            None,
            "200",
            Some(schema(list_of::<AgentSummary>)),
        ),
        op(
            "delete",
            "/agents/{id}",
            "Revoke an agent's token and close its session",
            None,
            "204",
            None,
        ),
        op(
            "post",
            "/join-tokens",
            "Create a single-use join token, with the install command and a cloud-init file",
            Some(schema(of::<CreateJoinToken>)),
            "201",
            Some(schema(of::<JoinTokenCreated>)),
        ),
        op(
            "post",
            "/projects",
            "Create a project",
            Some(schema(of::<CreateProject>)),
            "201",
            Some(schema(of::<Project>)),
        ),
        op(
            "get",
            "/projects",
            "List your projects",
            None,
            "200",
            Some(schema(list_of::<Project>)),
        ),
        op(
            "get",
            "/projects/{id}",
            "Read a project",
            None,
            "200",
            Some(schema(of::<Project>)),
        ),
        op(
            "patch",
            "/projects/{id}",
            "Change a project",
            Some(schema(of::<UpdateProject>)),
            "200",
            Some(schema(of::<Project>)),
        ),
        op(
            "delete",
            "/projects/{id}",
            "Delete a project with its secrets and history",
            None,
            "204",
            None,
        ),
        op(
            "get",
            "/projects/{id}/secrets",
            "List a project's secrets, values masked",
            None,
            "200",
            Some(schema(list_of::<SecretSummary>)),
        ),
        op(
            "get",
            "/projects/{id}/deployments",
            "A project's deployments, newest first",
            None,
            "200",
            Some(schema(list_of::<Deployment>)),
        ),
        op(
            "post",
            "/secrets",
            "Add a secret (encrypted at rest)",
            Some(schema(of::<CreateSecret>)),
            "201",
            Some(schema(of::<SecretSummary>)),
        ),
        op(
            "patch",
            "/secrets/{id}",
            "Change a secret's value",
            Some(schema(of::<UpdateSecret>)),
            "200",
            Some(schema(of::<SecretSummary>)),
        ),
        op(
            "delete",
            "/secrets/{id}",
            "Delete a secret",
            None,
            "204",
            None,
        ),
        op(
            "post",
            "/secrets/{id}/reveal",
            "Reveal a secret's value (recorded in the audit trail)",
            None,
            "200",
            Some(schema(of::<RevealedSecret>)),
        ),
        op(
            "post",
            "/deploy/{project_id}",
            "Deploy a project",
            None,
            "202",
            Some(schema(of::<DeployAccepted>)),
        ),
        op(
            "get",
            "/deployments/{id}",
            "A deployment with its history",
            None,
            "200",
            Some(schema(of::<Deployment>)),
        ),
    ];
    let error = schema(of::<ApiError>);

    let mut paths = Map::new();
    for operation in operations {
        let mut responses = Map::new();
        let success = match operation.response {
            Some(body) => {
                json!({"description": "success", "content": {"application/json": {"schema": body}}})
            }
            None => json!({"description": "success, no body"}),
        };
        responses.insert(operation.status.into(), success);
        for (status, description) in [
            ("400", "invalid input; the message says what to fix"),
            ("401", "missing or unknown API token"),
            ("404", "no such thing, or it is not yours"),
        ] {
            responses.insert(
                status.into(),
                json!({"description": description, "content": {"application/json": {"schema": error}}}),
            );
        }
        let parameters: Vec<Value> = operation
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}))
            .collect();
        let mut entry =
            json!({"summary": operation.summary, "parameters": parameters, "responses": responses});
        if let Some(body) = operation.request {
            entry["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": body}}});
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
