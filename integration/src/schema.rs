//! A checker for Cairn's `--json` event schema (`docs/events.schema.json`), shared by the unit
//! and end-to-end tests.

/// Checks one event line against `docs/events.schema.json`: the envelope, then the kind's
/// required fields and their JSON types. The schema uses only `required`, `type` and `const`,
/// so this small checker is complete for it. It lives with the tests (the unit tests of
/// the events and the end-to-end tests check every line Cairn prints with it).
///
/// # Errors
/// What does not match.
pub fn validate(schema: &serde_json::Value, line: &serde_json::Value) -> Result<(), String> {
    let object = line.as_object().ok_or("not an object")?;
    let kind = object
        .get("event")
        .and_then(|e| e.as_str())
        .ok_or("no event")?;
    let definition = schema["$defs"]
        .get(kind)
        .ok_or(format!("unknown event `{kind}`"))?;
    for part in [&schema["$defs"]["envelope"], definition] {
        for field in part["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap();
            let value = object.get(field).ok_or(format!("missing `{field}`"))?;
            let property = &part["properties"][field];
            if let Some(expected) = property.get("const") {
                if value != expected {
                    return Err(format!("`{field}` is {value}, expected {expected}"));
                }
            }
            let types: Vec<&str> = match &property["type"] {
                serde_json::Value::String(t) => vec![t.as_str()],
                serde_json::Value::Array(list) => list.iter().filter_map(|t| t.as_str()).collect(),
                _ => continue,
            };
            let actual = match value {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "boolean",
                serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                serde_json::Value::Number(_) => "number",
                serde_json::Value::String(_) => "string",
                serde_json::Value::Array(_) => "array",
                serde_json::Value::Object(_) => "object",
            };
            let ok = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
            if !ok {
                return Err(format!("`{field}` is {actual}, expected {types:?}"));
            }
        }
    }
    Ok(())
}
