//! Value schema: values written under a prefix must be JSON objects that
//! have every required field.
//!
//! Config:
//! - `prefix`: the key prefix the rule applies to (e.g. `/users/`).
//! - `required`: comma-separated field names every object must have.
//! - `required-key` (optional): a key whose value, read at the request's
//!   revision, holds more comma-separated required fields. Lets operators
//!   change the schema with an ordinary write, replicated like any data.
//!
//! Only puts under the prefix are checked. Fails closed when `prefix` is
//! missing.

use cairn_plugin_sdk::host::{self, split_list};
use cairn_plugin_sdk::{Operation, Validator, Verdict, WriteRequest, export_validator};
use serde_json::Value;

struct ValueSchema;

impl Validator for ValueSchema {
    fn validate(request: WriteRequest) -> Verdict {
        match check(&request) {
            Ok(()) => Verdict::Allow,
            Err(reason) => Verdict::Deny(reason),
        }
    }
}

fn check(request: &WriteRequest) -> Result<(), String> {
    if request.op != Operation::Put {
        return Ok(());
    }
    let config = host::config();
    let prefix = config.require("prefix")?;
    if !request.key.starts_with(prefix.as_bytes()) {
        return Ok(());
    }
    let key = String::from_utf8_lossy(&request.key);
    let value = request.value.as_deref().unwrap_or_default();
    let object = match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(object)) => object,
        Ok(other) => {
            return Err(format!(
                "value of {key:?} must be a JSON object, not {}",
                kind(&other)
            ));
        }
        Err(e) => return Err(format!("value of {key:?} is not valid JSON: {e}")),
    };

    let mut required: Vec<String> = config
        .list("required")
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let Some(fields) = config.get("required-key").and_then(host::get) {
        let fields = String::from_utf8_lossy(&fields);
        required.extend(split_list(&fields).into_iter().map(str::to_owned));
    }
    let missing: Vec<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|field| !object.contains_key(*field))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "value of {key:?} is missing required field(s): {}",
            missing.join(", ")
        ))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

export_validator!(ValueSchema);
