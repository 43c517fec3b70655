//! Cairn's `--json` event schema (`docs/events.schema.json`) checked with the `jsonschema`
//! crate, a full JSON Schema (2020-12) validator, shared by the unit and end-to-end tests.

/// Checks one event line against `schema` (`docs/events.schema.json`, parsed): the
/// envelope (`allOf`) and exactly one event kind (`oneOf`), every keyword the schema uses.
///
/// # Errors
/// The schema is not a valid JSON Schema, or every way `line` does not match it (with
/// where in the line).
pub fn validate(schema: &serde_json::Value, line: &serde_json::Value) -> Result<(), String> {
    let validator =
        jsonschema::validator_for(schema).map_err(|e| format!("not a JSON Schema: {e}"))?;
    let problems: Vec<String> = validator
        .iter_errors(line)
        .map(|error| {
            let at = error.instance_path().to_string();
            if at.is_empty() {
                error.to_string()
            } else {
                format!("{at}: {error}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
