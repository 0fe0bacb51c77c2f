//! How deeply a stored item may nest. serde_json reads any depth when it only checks syntax or
//! keeps a value as raw text (that is how items are kept exactly as received), so an item
//! that is not an audit event could be a 100,000-deep array, stored as an error record's
//! original: readers downstream refuse such records (Python's `json` past its recursion limit
//! of about 1,000, Elasticsearch's parser past 1,000 levels, serde_json past 128). Past
//! [`MAX_STORED_DEPTH`] the item is kept as a JSON string holding its text instead, which
//! every reader takes and which loses nothing.

use kubetrail_core::RawJson;

/// The deepest nesting of objects and arrays kept as JSON in a stored original. The record
/// around it adds one level; every reader named above takes that with room to spare, and no
/// audit event comes close (Kubernetes objects nest a few dozen levels at most).
pub const MAX_STORED_DEPTH: usize = 100;

/// The deepest nesting of objects and arrays in `json` (valid JSON text), counting the
/// outermost as 1; a scalar is 0. One pass, no recursion, whatever the depth.
pub fn depth(json: &str) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// `raw` as it may be stored: itself when it nests at most [`MAX_STORED_DEPTH`] deep, else
/// a JSON string of its text (and `true`).
pub fn bounded(raw: RawJson) -> (RawJson, bool) {
    if depth(raw.get()) <= MAX_STORED_DEPTH {
        return (raw, false);
    }
    match serde_json::value::to_raw_value(raw.get()) {
        Ok(text) => (text.into(), true),
        // Serializing a str cannot fail; were it to, the item is kept as it was.
        Err(_) => (raw, false),
    }
}

/// An error reason, plus that the item is kept as a string because of its depth.
pub fn too_deep(reason: &str) -> String {
    format!(
        "{reason} (nested more than {MAX_STORED_DEPTH} levels deep: kept as a JSON string of its text)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn depths() {
        assert_eq!(depth("1"), 0);
        assert_eq!(depth(r#""[[[""#), 0);
        assert_eq!(depth("[]"), 1);
        assert_eq!(depth(r#"{"a":[{"b":"]]}}\"[["}]}"#), 3);
        assert_eq!(depth(r#"["\\", [1]]"#), 2);
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(depth(&deep), 100_000);
    }

    #[test]
    fn deep_items_become_strings_that_any_reader_takes() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let raw: RawJson = serde_json::value::RawValue::from_string(deep.clone())
            .unwrap()
            .into();
        let (kept, as_string) = bounded(raw);
        assert!(as_string);
        // serde_json's default limit (128) is stricter than Python's and Elasticsearch's.
        let back: String = serde_json::from_str(kept.get()).unwrap();
        assert_eq!(back, deep);

        let ok = format!(
            "{}{}",
            "[".repeat(MAX_STORED_DEPTH),
            "]".repeat(MAX_STORED_DEPTH)
        );
        let raw: RawJson = serde_json::value::RawValue::from_string(ok.clone())
            .unwrap()
            .into();
        let (kept, as_string) = bounded(raw);
        assert!(!as_string);
        assert_eq!(kept.get(), ok);
    }

    fn nested() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            "[\\[\\]{}\"\\\\a]{0,6}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(12, 64, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z\\[{\"]{0,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn reference_depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(reference_depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(reference_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    proptest! {
        /// The one-pass count agrees with a recursive walk of the parsed value, brackets
        /// inside strings (escaped quotes too) not counted.
        #[test]
        fn depth_matches_the_parsed_value(v in nested()) {
            prop_assert_eq!(depth(&v.to_string()), reference_depth(&v));
        }
    }
}
