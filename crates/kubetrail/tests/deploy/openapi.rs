//! A validator of Kubernetes objects against the OpenAPI v3 schemas a kube-apiserver serves
//! (`/openapi/v3/<group-version>`, gzip, in `$KUBETRAIL_FIXTURES/kube-openapi/`): types,
//! required fields, enums, int32 ranges, and no field the schema does not know, with the
//! Kubernetes extensions (`x-kubernetes-group-version-kind`, `x-kubernetes-int-or-string`,
//! `x-kubernetes-preserve-unknown-fields`). Written here because the general JSON Schema
//! validators do not know those extensions, and the subset the apiserver's schemas use is
//! small: `$ref`, `allOf`, `oneOf`, `type`, `properties`, `additionalProperties`, `items`,
//! `required`, `enum`, `format`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

/// Every schema of every group-version file, and which one describes each kind.
pub struct Schemas {
    /// One `components.schemas` map per file.
    docs: Vec<serde_json::Map<String, Value>>,
    /// (apiVersion, kind) → (file, schema name).
    kinds: HashMap<(String, String), (usize, String)>,
}

impl Schemas {
    pub fn load(dir: &Path) -> Schemas {
        let mut docs = Vec::new();
        let mut kinds = HashMap::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no schemas in {}", dir.display());
        for f in files {
            let mut text = String::new();
            flate2::read::GzDecoder::new(std::fs::File::open(&f).unwrap())
                .read_to_string(&mut text)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let doc: Value = serde_json::from_str(&text).unwrap();
            let Some(Value::Object(schemas)) = doc
                .get("components")
                .and_then(|c| c.get("schemas"))
                .cloned()
            else {
                panic!("{}: no components.schemas", f.display());
            };
            let idx = docs.len();
            for (name, s) in &schemas {
                for gvk in s
                    .get("x-kubernetes-group-version-kind")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let (g, v, k) = (
                        gvk["group"].as_str().unwrap_or(""),
                        gvk["version"].as_str().unwrap_or(""),
                        gvk["kind"].as_str().unwrap_or(""),
                    );
                    let api_version = if g.is_empty() {
                        v.to_string()
                    } else {
                        format!("{g}/{v}")
                    };
                    // The first file that defines a kind wins (shared types repeat).
                    kinds
                        .entry((api_version, k.to_string()))
                        .or_insert((idx, name.clone()));
                }
            }
            docs.push(schemas);
        }
        Schemas { docs, kinds }
    }

    /// The problems of one object (`path: what`); empty when the apiserver would accept its
    /// shape.
    pub fn validate(&self, object: &Value) -> Vec<String> {
        let api_version = object["apiVersion"].as_str().unwrap_or("");
        let kind = object["kind"].as_str().unwrap_or("");
        let Some((doc, name)) = self.kinds.get(&(api_version.to_string(), kind.to_string())) else {
            return vec![format!("no schema for {api_version} {kind}")];
        };
        let mut problems = Vec::new();
        let schema = Value::String(format!("#/components/schemas/{name}"));
        let root = serde_json::json!({ "$ref": schema });
        self.check(*doc, &root, object, kind, &mut problems);
        problems
    }

    fn resolve<'a>(&'a self, doc: usize, reference: &str) -> Option<&'a Value> {
        let name = reference.strip_prefix("#/components/schemas/")?;
        self.docs[doc].get(name)
    }

    fn check(&self, doc: usize, schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match self.resolve(doc, r) {
                Some(s) => self.check(doc, s, v, path, out),
                None => out.push(format!("{path}: unresolvable {r}")),
            }
            return;
        }
        for s in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.check(doc, s, v, path, out);
        }
        if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
            let fits = options.iter().any(|s| {
                let mut p = Vec::new();
                self.check(doc, s, v, path, &mut p);
                p.is_empty()
            });
            if !fits {
                out.push(format!(
                    "{path}: {v} fits none of {}",
                    Value::Array(options.clone())
                ));
            }
        }
        if v.is_null() {
            if schema.get("nullable") != Some(&Value::Bool(true)) && schema.get("type").is_some() {
                out.push(format!("{path}: null"));
            }
            return;
        }
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            if !(v.is_i64() || v.is_u64() || v.is_string()) {
                out.push(format!("{path}: {v} is neither an integer nor a string"));
            }
            return;
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array)
            && !values.contains(v)
        {
            out.push(format!(
                "{path}: {v} is not one of {}",
                Value::Array(values.clone())
            ));
        }
        let Some(ty) = schema.get("type").and_then(Value::as_str) else {
            return;
        };
        match ty {
            "object" => {
                let Some(map) = v.as_object() else {
                    out.push(format!("{path}: {v} is not an object"));
                    return;
                };
                for r in schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !map.contains_key(r) {
                        out.push(format!("{path}: the required field '{r}' is missing"));
                    }
                }
                let props = schema.get("properties").and_then(Value::as_object);
                let extra = schema.get("additionalProperties");
                // An object schema that lists no members (FieldsV1, RawExtension) does not
                // describe them: anything goes, as for preserve-unknown-fields.
                let open = schema.get("x-kubernetes-preserve-unknown-fields")
                    == Some(&Value::Bool(true))
                    || (props.is_none() && extra.is_none());
                for (k, item) in map {
                    let sub = format!("{path}.{k}");
                    match (props.and_then(|p| p.get(k)), extra) {
                        (Some(s), _) => self.check(doc, s, item, &sub, out),
                        (None, Some(Value::Bool(false))) | (None, None) if !open => {
                            out.push(format!("{sub}: unknown field"))
                        }
                        (None, Some(s)) if s.is_object() => self.check(doc, s, item, &sub, out),
                        _ => {}
                    }
                }
            }
            "array" => {
                let Some(items) = v.as_array() else {
                    out.push(format!("{path}: {v} is not an array"));
                    return;
                };
                if let Some(s) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(doc, s, item, &format!("{path}[{i}]"), out);
                    }
                }
            }
            "string" => {
                if !v.is_string() {
                    out.push(format!("{path}: {v} is not a string"));
                }
            }
            "integer" => match v.as_i64() {
                None => out.push(format!("{path}: {v} is not an integer")),
                Some(n) => {
                    if schema.get("format").and_then(Value::as_str) == Some("int32")
                        && i32::try_from(n).is_err()
                    {
                        out.push(format!("{path}: {n} is out of the int32 range"));
                    }
                }
            },
            "number" => {
                if !v.is_number() {
                    out.push(format!("{path}: {v} is not a number"));
                }
            }
            "boolean" => {
                if !v.is_boolean() {
                    out.push(format!("{path}: {v} is not a boolean"));
                }
            }
            other => out.push(format!("{path}: unknown schema type {other}")),
        }
    }
}
