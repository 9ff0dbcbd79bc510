//! A small validator for the Swagger 2.0 schemas in `arm-spec/compute-2024-11-01.json` (an
//! extract of Microsoft's Compute REST description; its header names the source files and
//! commits). It checks what the extract uses: `type` (object, array, string, integer with
//! int32/int64 range, number, boolean), `properties` (a property the definition does not list
//! is a violation unless the definition is `x-open`), `required`, `items`, `enum`, `allOf`,
//! `additionalProperties`, `$ref` to `#/definitions/…`, `format: date-time`, and, for request
//! bodies, `readOnly` properties (a client must not send them). `x-not-extracted` passes
//! anything: those parts of the description were not copied because scalehook neither sends
//! nor reads them.

use serde_json::Value;
use std::sync::OnceLock;

/// Whose document is checked: a request body (readOnly properties refused) or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        serde_json::from_str(include_str!("arm-spec/compute-2024-11-01.json"))
            .expect("the ARM spec extract is JSON")
    })
}

/// Every way `doc` departs from `#/definitions/<definition>`, as `path: problem` lines.
pub fn validate(definition: &str, doc: &Value, direction: Direction) -> Vec<String> {
    let mut out = Vec::new();
    let schema = json_ref(&format!("#/definitions/{definition}"));
    check(schema, doc, "$", direction, &mut out);
    out
}

fn json_ref(r: &str) -> &'static Value {
    let name = r
        .strip_prefix("#/definitions/")
        .unwrap_or_else(|| panic!("only local $refs in the extract: {r}"));
    spec()
        .pointer(&format!("/definitions/{name}"))
        .unwrap_or_else(|| panic!("{name} is not in the extract"))
}

fn resolve(schema: &'static Value) -> &'static Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(json_ref(r)),
        None => schema,
    }
}

/// Required names of a schema with its `allOf` parents, and whether any part is `x-open`.
fn required_and_open(schema: &'static Value) -> (Vec<String>, bool) {
    let schema = resolve(schema);
    let mut required: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut open = schema
        .get("x-open")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for parent in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (r, o) = required_and_open(parent);
        required.extend(r);
        open |= o;
    }
    (required, open)
}

fn check(schema: &'static Value, doc: &Value, at: &str, dir: Direction, out: &mut Vec<String>) {
    let schema = resolve(schema);
    if schema.get("x-not-extracted").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object");
    match ty {
        "object" => {
            let Some(obj) = doc.as_object() else {
                out.push(format!("{at}: expected an object, got {doc}"));
                return;
            };
            if let Some(extra) = schema.get("additionalProperties") {
                // A map (tags): every value has that schema.
                let extra: &'static Value = extra;
                for (k, v) in obj {
                    check(extra, v, &format!("{at}.{k}"), dir, out);
                }
                return;
            }
            let (required, open) = required_and_open(schema);
            for name in &required {
                if !obj.contains_key(name) {
                    out.push(format!("{at}: required property {name:?} is missing"));
                }
            }
            for (k, v) in obj {
                match property(schema, k) {
                    Some(p) => {
                        if dir == Direction::Request
                            && p.get("readOnly").and_then(Value::as_bool) == Some(true)
                        {
                            out.push(format!("{at}.{k}: readOnly, a client must not send it"));
                        }
                        check(p, v, &format!("{at}.{k}"), dir, out);
                    }
                    None if open => {}
                    None => out.push(format!("{at}: property {k:?} is not in the description")),
                }
            }
        }
        "array" => {
            let Some(items) = doc.as_array() else {
                out.push(format!("{at}: expected an array, got {doc}"));
                return;
            };
            if let Some(item) = schema.get("items") {
                let item: &'static Value = item;
                for (i, v) in items.iter().enumerate() {
                    check(item, v, &format!("{at}[{i}]"), dir, out);
                }
            }
        }
        "string" => match doc.as_str() {
            None => out.push(format!("{at}: expected a string, got {doc}")),
            Some(s) => {
                if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                    if !allowed.iter().any(|a| a.as_str() == Some(s)) {
                        out.push(format!("{at}: {s:?} is not one of {allowed:?}"));
                    }
                }
                if schema.get("format").and_then(Value::as_str) == Some("date-time")
                    && !(s.len() >= 20 && s.as_bytes().get(10) == Some(&b'T'))
                {
                    out.push(format!("{at}: {s:?} is not a date-time"));
                }
            }
        },
        "integer" => {
            let fits = match schema.get("format").and_then(Value::as_str) {
                Some("int32") => doc.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                _ => {
                    doc.as_i64().is_some() || doc.as_u64().is_some_and(|n| i64::try_from(n).is_ok())
                }
            };
            if !fits {
                out.push(format!(
                    "{at}: expected an integer of {}, got {doc}",
                    schema
                        .get("format")
                        .and_then(Value::as_str)
                        .unwrap_or("int64")
                ));
            }
        }
        "number" => {
            if !doc.is_number() {
                out.push(format!("{at}: expected a number, got {doc}"));
            }
        }
        "boolean" => {
            if !doc.is_boolean() {
                out.push(format!("{at}: expected a boolean, got {doc}"));
            }
        }
        other => out.push(format!(
            "{at}: the extract uses type {other:?}, which this validator does not know"
        )),
    }
}

/// The static schema of property `name` of `schema` or its `allOf` parents.
fn property(schema: &'static Value, name: &str) -> Option<&'static Value> {
    let schema = resolve(schema);
    if let Some(p) = schema.get("properties").and_then(|p| p.get(name)) {
        return Some(p);
    }
    schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|parent| property(parent, name))
}

#[test]
fn the_validator_finds_what_the_description_does_not_allow() {
    use serde_json::json;
    let ok = json!({"sku": {"capacity": 3}});
    assert!(validate("VirtualMachineScaleSetUpdate", &ok, Direction::Request).is_empty());
    let tags = json!({"sku": {"capacity": 3}, "tags": {"team": "ci"}});
    assert!(validate("VirtualMachineScaleSetUpdate", &tags, Direction::Request).is_empty());
    for bad in [
        json!({"capacity": 3}),
        json!({"sku": {"capacity": "3"}}),
        json!({"sku": {"capacity": 3.5}}),
        json!({"sku": {"capacity": 3, "size": 1}}),
        json!({"id": "x", "sku": {"capacity": 3}}),
        json!({"properties": {"overprovision": "no"}}),
    ] {
        assert!(
            !validate("VirtualMachineScaleSetUpdate", &bad, Direction::Request).is_empty(),
            "{bad}"
        );
    }
    assert!(!validate(
        "VirtualMachineScaleSetVMInstanceRequiredIDs",
        &json!({}),
        Direction::Request
    )
    .is_empty());
    assert!(!validate(
        "VirtualMachineScaleSetVMInstanceRequiredIDs",
        &json!({"instanceIds": [1]}),
        Direction::Request
    )
    .is_empty());
    assert!(validate(
        "VirtualMachineScaleSetVMInstanceRequiredIDs",
        &json!({"instanceIds": ["1"]}),
        Direction::Request
    )
    .is_empty());
    // readOnly is fine in an answer.
    let vm =
        json!({"id": "x", "name": "n", "type": "t", "location": "westeurope", "instanceId": "1"});
    assert!(validate("VirtualMachineScaleSetVM", &vm, Direction::Response).is_empty());
    assert!(
        !validate(
            "VirtualMachineScaleSetVM",
            &json!({"instanceId": "1"}),
            Direction::Response
        )
        .is_empty(),
        "location is required"
    );
}
