//! `GET /api/v1/openapi.json`: the API described as OpenAPI 3.1, built from the same route
//! table as the router, with schemas generated from the very `shared` types the handlers take
//! and return, so the document cannot drift from either.

use axum::Json;
use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};
use shared::api::ApiError;

/// One operation as the document shows it.
struct Operation {
    method: String,
    path: &'static str,
    summary: &'static str,
    request: Option<Value>,
    body_required: bool,
    status: String,
    response: Option<Value>,
    query: &'static [(&'static str, &'static str)],
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
            method: route.method.as_str().to_ascii_lowercase(),
            path: route.path,
            summary: route.summary,
            request: route.request.map(&mut schema),
            body_required: route.body_required,
            status: route.status.as_u16().to_string(),
            response: route.response.map(&mut schema),
            query: route.query,
        })
        .collect();
    let error = schema(|generator| generator.subschema_for::<ApiError>());

    let mut paths = Map::new();
    for operation in operations {
        let mut responses = Map::new();
        let success = match operation.response {
            Some(body) => {
                json!({"description": "success", "content": {"application/json": {"schema": body}}})
            }
            None => json!({"description": "success, no body"}),
        };
        responses.insert(operation.status, success);
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
            .map(|name| {
                // Ids are UUIDs; the one other path parameter is a secret's version number.
                let schema = if name == "version" {
                    json!({"type": "integer", "minimum": 1})
                } else {
                    json!({"type": "string", "format": "uuid"})
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .chain(operation.query.iter().map(|(name, kind)| {
                json!({"name": name, "in": "query", "required": false, "schema": {"type": kind}})
            }))
            .collect();
        let mut entry =
            json!({"summary": operation.summary, "parameters": parameters, "responses": responses});
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
