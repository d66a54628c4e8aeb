//! /openapi.json describes exactly the routes the router serves.

use std::collections::BTreeSet;

use serde_json::Value;

fn doc() -> Value {
    serde_json::from_str(crate::OPENAPI).expect("openapi.json is JSON")
}

#[test]
fn every_served_route_is_documented_and_nothing_else() {
    let doc = doc();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    let paths = doc["paths"].as_object().expect("paths");
    let served: BTreeSet<(String, String)> = crate::routes()
        .into_iter()
        .map(|(m, p)| (m.as_str().to_lowercase(), p.to_string()))
        .collect();
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap() {
            if method != "parameters" {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    assert_eq!(served, documented);
}

#[test]
fn every_operation_has_an_id_responses_and_resolvable_refs() {
    let doc = doc();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: operationId"));
            assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{id}: responses"));
            assert!(!responses.is_empty(), "{id}");
            // Path templates name their parameters.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                let found = params.iter().any(|p| {
                    p["name"] == name
                        || p["$ref"]
                            .as_str()
                            .is_some_and(|r| r.ends_with(&format!("/{name}")))
                });
                assert!(found, "{id}: path parameter {name} is not described");
            }
        }
    }
    // Every $ref points at something that exists.
    fn walk(v: &Value, doc: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    let ptr = r.strip_prefix('#').expect("local ref");
                    assert!(doc.pointer(ptr).is_some(), "dangling $ref {r}");
                }
                m.values().for_each(|x| walk(x, doc));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, doc)),
            _ => {}
        }
    }
    walk(&doc, &doc);
    assert!(schemas.contains_key("Error"));
}

#[test]
fn the_error_codes_in_the_document_are_the_ones_the_server_uses() {
    let doc = doc();
    let codes: BTreeSet<String> = doc["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .expect("Error.error.code enum")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let used: BTreeSet<String> = [
        "not_found",
        "already_exists",
        "invalid_transition",
        "snapshot_not_found",
        "snapshot_exists",
        "unsupported_by_backend",
        "unsupported",
        "invalid_input",
        "boot_failed",
        "agent_unavailable",
        "guest_file_not_found",
        "guest_file_error",
        "bad_snapshot",
        "internal",
        "bad_request",
        "no_route",
        "method_not_allowed",
        "unauthorized",
        "payload_too_large",
        "insufficient_memory",
        "disk_full",
        "port_in_use",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(codes, used);
}

#[test]
fn published_ports_are_documented_on_create_and_on_the_sandbox() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    for schema in ["CreateSandbox", "Sandbox"] {
        let ports = &schemas[schema]["properties"]["ports"];
        assert_eq!(ports["type"], "array", "{schema}.ports");
        assert_eq!(ports["items"]["type"], "string", "{schema}.ports");
    }
    // The library's view has the field the document names.
    let fields = serde_json::to_value(crate::api::CreateSandbox {
        ports: vec!["8080:80".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(fields["ports"][0], "8080:80");
}
