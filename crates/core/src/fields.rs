//! A record's normalized fields: a JSON object's members, held either as a map (what filters
//! read and edit) or as the JSON text a source wrote straight from its parser.
//!
//! Audit sources make about a hundred thousand records a second, and a `serde_json::Map`
//! of a dozen strings costs two dozen allocations to build, the same again to free, and an
//! escaping pass to encode. Most records are never looked into by a filter, so a source may
//! hand over the fields already encoded ([`Fields::from_encoded`]): encoding then copies the
//! text, and the map is decoded only when something reads (`Deref`, once, cached) or edits
//! (`DerefMut`, which drops the text) it. [`Fields::get_member`] reads one member without
//! decoding anything.

use std::borrow::Cow;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Normalized fields; dereferences to a `serde_json::Map`.
#[derive(Clone, Default)]
pub struct Fields {
    /// A JSON object (`{"k":v,...}`) with unique keys, as written by a source; `None` once
    /// the map was edited.
    /// (A `String`, not a `Box<str>`: boxing would shrink the writer's buffer, one more
    /// reallocation and copy per record.)
    encoded: Option<String>,
    /// Where the top-level members of `encoded` start, when its writer recorded them.
    index: Option<MemberIndex>,
    /// The decoded map, made on first use.
    map: OnceLock<Map<String, Value>>,
}

/// Where the top-level members of an encoded object start (the offset of each key's opening
/// quote), as its [`ObjectWriter`] wrote them: finding one member is then a comparison per
/// member instead of a parse of the whole object.
#[derive(Clone, Copy, Debug)]
pub struct MemberIndex {
    starts: [u32; MemberIndex::MAX],
    len: u8,
    /// More members than it can hold, or offsets past `u32`: not usable.
    overflow: bool,
}

impl MemberIndex {
    const MAX: usize = 24;

    pub fn new() -> MemberIndex {
        MemberIndex {
            starts: [0; MemberIndex::MAX],
            len: 0,
            overflow: false,
        }
    }

    fn push(&mut self, at: usize) {
        match u32::try_from(at) {
            Ok(at) if usize::from(self.len) < MemberIndex::MAX => {
                self.starts[usize::from(self.len)] = at;
                self.len += 1;
            }
            _ => self.overflow = true,
        }
    }

    fn starts(&self) -> Option<&[u32]> {
        (!self.overflow).then(|| &self.starts[..usize::from(self.len)])
    }
}

impl Default for MemberIndex {
    fn default() -> Self {
        MemberIndex::new()
    }
}

impl Fields {
    /// Fields from the text of a JSON object with unique keys, none of them an envelope key
    /// or `object` (the writer of the text vouches for it; a text that is not a JSON object
    /// reads as no fields).
    pub fn from_encoded(text: String) -> Fields {
        Fields {
            encoded: Some(text),
            index: None,
            map: OnceLock::new(),
        }
    }

    /// Like [`Fields::from_encoded`], with the index of its top-level members that an
    /// [`ObjectWriter::open_indexed`] recorded while writing `text` (and nothing else).
    pub fn from_encoded_indexed(text: String, index: MemberIndex) -> Fields {
        Fields {
            encoded: Some(text),
            index: Some(index),
            map: OnceLock::new(),
        }
    }

    fn decoded(&self) -> &Map<String, Value> {
        self.map.get_or_init(|| {
            self.encoded
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default()
        })
    }

    /// The members as JSON text without the braces (`"a":1,"b":2`), if the fields are still
    /// as the source encoded them.
    pub fn encoded_members(&self) -> Option<&str> {
        let t = self.encoded.as_deref()?.trim();
        t.strip_prefix('{')?.strip_suffix('}')
    }
}

/// One member of [`Fields`], borrowed: JSON text while the fields are still encoded, else the
/// map's value.
#[derive(Debug, Clone, Copy)]
pub enum Member<'a> {
    /// The member's JSON text.
    Encoded(&'a str),
    Value(&'a Value),
}

impl<'a> Member<'a> {
    /// Reads the member into `T`, borrowing from the fields where `T` can; `None` if it has
    /// another shape.
    pub fn read<T: serde::Deserialize<'a>>(self) -> Option<T> {
        match self {
            Member::Encoded(text) => serde_json::from_str(text).ok(),
            Member::Value(v) => T::deserialize(v).ok(),
        }
    }

    /// Whether the member is a JSON object. (A derived struct also reads an array, field by
    /// position: check this first where only an object may answer.)
    pub fn is_object(self) -> bool {
        match self {
            Member::Encoded(text) => text.trim_start().starts_with('{'),
            Member::Value(v) => v.is_object(),
        }
    }
}

impl Fields {
    /// One member, borrowed and not decoded: nothing is allocated to look at it.
    pub fn get_member(&self, key: &str) -> Option<Member<'_>> {
        if let Some(text) = self.encoded.as_deref() {
            // Keys are compared as written, so one that JSON would escape takes the parse.
            let plain = !needs_escape(key.as_bytes());
            if plain && let Some(starts) = self.index.as_ref().and_then(MemberIndex::starts) {
                return indexed_member(text, starts, key).map(Member::Encoded);
            }
            let mut de = serde_json::Deserializer::from_str(text);
            return PickRaw { key }
                .deserialize(&mut de)
                .ok()
                .flatten()
                .map(|raw| Member::Encoded(raw.get()));
        }
        self.map.get()?.get(key).map(Member::Value)
    }
}

/// The text of member `key` of `text`, an object written by an [`ObjectWriter`] whose members
/// start at `starts`: `"key":value` each, separated by single commas, inside `{` `}`.
fn indexed_member<'t>(text: &'t str, starts: &[u32], key: &str) -> Option<&'t str> {
    let b = text.as_bytes();
    for (i, &start) in starts.iter().enumerate() {
        let s = start as usize;
        let k = s + 1;
        let matches = b.get(s) == Some(&b'"')
            && b.get(k..k + key.len()) == Some(key.as_bytes())
            && b.get(k + key.len()..k + key.len() + 2) == Some(&b"\":"[..]);
        if matches {
            let value_start = k + key.len() + 2;
            // The comma before the next member, or the closing brace.
            let value_end = match starts.get(i + 1) {
                Some(&next) => (next as usize).checked_sub(1)?,
                None => b.len().checked_sub(1)?,
            };
            return text.get(value_start..value_end);
        }
    }
    None
}

/// Reads one member of a JSON object as its text, skipping the others unparsed.
struct PickRaw<'k> {
    key: &'k str,
}

impl<'de> DeserializeSeed<'de> for PickRaw<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<&'de RawValue>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PickRaw<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(self.key))? {
            if hit && found.is_none() {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

impl From<Map<String, Value>> for Fields {
    fn from(map: Map<String, Value>) -> Fields {
        Fields {
            encoded: None,
            index: None,
            map: OnceLock::from(map),
        }
    }
}

impl FromIterator<(String, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Fields {
        Fields::from(iter.into_iter().collect::<Map<String, Value>>())
    }
}

impl Deref for Fields {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Map<String, Value> {
        self.decoded()
    }
}

impl DerefMut for Fields {
    fn deref_mut(&mut self) -> &mut Map<String, Value> {
        self.decoded();
        // Edited from here on: the text no longer says what the map holds.
        self.encoded = None;
        self.index = None;
        if self.map.get().is_none() {
            self.map = OnceLock::from(Map::new());
        }
        match self.map.get_mut() {
            Some(m) => m,
            None => unreachable!("initialised above"),
        }
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.map.get(), &self.encoded) {
            (Some(m), _) => m.fmt(f),
            (None, Some(t)) => f.debug_tuple("Encoded").field(t).finish(),
            (None, None) => f.write_str("{}"),
        }
    }
}

impl PartialEq for Fields {
    fn eq(&self, other: &Fields) -> bool {
        self.decoded() == other.decoded()
    }
}

/// A map key compared with a wanted one, without allocating.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// A string read from JSON: borrowed from the input when it has no escapes, owned otherwise.
/// (`Cow<'a, str>` borrows only as a struct's direct field; inside an `Option` or a `Vec` serde
/// always copies it, which for the audit parsers was two dozen allocations per event.)
#[derive(Clone, PartialEq, Eq)]
pub struct JsonStr<'a>(pub Cow<'a, str>);

impl Deref for JsonStr<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JsonStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonStr<'a>, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(StrVisitor)
    }
}

/// Writes a JSON object member by member, keys given in sorted order (the order a
/// `serde_json::Map` keeps, so encoded and decoded fields encode alike).
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    index: Option<&'a mut MemberIndex>,
    /// Whether the [`JsonStr`]s given were read by serde_json from JSON text (see
    /// [`ObjectWriter::strings_from_json_text`]).
    from_text: bool,
}

impl<'a> ObjectWriter<'a> {
    /// Starts an object (writes `{`).
    pub fn open(out: &'a mut Vec<u8>) -> ObjectWriter<'a> {
        out.push(b'{');
        ObjectWriter {
            out,
            first: true,
            index: None,
            from_text: false,
        }
    }

    /// Declares that every [`JsonStr`] given to this writer (and to the objects opened with
    /// [`ObjectWriter::object`]) was deserialized by serde_json from JSON text, not from a
    /// `Value`: a borrowed one is then the text between two quotes, which holds nothing to
    /// escape (a string with an escape sequence cannot be borrowed, and JSON text has no raw
    /// `"` or control character inside a string), so it is copied without being scanned.
    pub fn strings_from_json_text(mut self) -> Self {
        self.from_text = true;
        self
    }

    /// Starts an object member: writes the key, opens the nested object and returns its
    /// writer (which treats strings as this one does).
    pub fn object(&mut self, key: &str) -> ObjectWriter<'_> {
        let from_text = self.from_text;
        let mut w = ObjectWriter::open(self.key(key));
        w.from_text = from_text;
        w
    }

    /// Starts an object at the start of `out`, recording where each of its members starts
    /// (for [`Fields::from_encoded_indexed`]).
    pub fn open_indexed(out: &'a mut Vec<u8>, index: &'a mut MemberIndex) -> ObjectWriter<'a> {
        out.push(b'{');
        ObjectWriter {
            out,
            first: true,
            index: Some(index),
            from_text: false,
        }
    }

    /// Starts a member: writes the key and returns the buffer for its value.
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        if let Some(ix) = self.index.as_deref_mut() {
            ix.push(self.out.len());
        }
        write_json_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    /// A string member, if there is a value.
    pub fn str(&mut self, key: &str, v: &Option<JsonStr<'_>>) {
        if let Some(v) = v {
            let from_text = self.from_text;
            write_str(self.key(key), v, from_text);
        }
    }

    /// A string member, if there is a value.
    pub fn str_opt(&mut self, key: &str, v: Option<&str>) {
        if let Some(v) = v {
            write_json_str(self.key(key), v);
        }
    }

    /// A list-of-strings member, if there is a value.
    pub fn list(&mut self, key: &str, v: &Option<Vec<JsonStr<'_>>>) {
        if let Some(list) = v {
            let from_text = self.from_text;
            let out = self.key(key);
            out.push(b'[');
            for (i, s) in list.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, s, from_text);
            }
            out.push(b']');
        }
    }

    /// Ends the object (writes `}`).
    pub fn close(self) {
        self.out.push(b'}');
    }
}

/// Appends `s` as a JSON string literal; `from_text`: see
/// [`ObjectWriter::strings_from_json_text`].
fn write_str(out: &mut Vec<u8>, s: &JsonStr<'_>, from_text: bool) {
    match &s.0 {
        Cow::Borrowed(v) if from_text => {
            debug_assert!(
                !needs_escape(v.as_bytes()),
                "borrowed from JSON text: {v:?}"
            );
            out.reserve(v.len() + 2);
            out.push(b'"');
            out.extend_from_slice(v.as_bytes());
            out.push(b'"');
        }
        _ => write_json_str(out, s),
    }
}

/// Appends `s` to `out` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Serializing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Whether `s` holds a byte that a JSON string literal must escape (a control character, `"`
/// or `\\`). Checked 16 bytes at a time without a branch per byte, which the compiler turns
/// into vector instructions: every string of every record goes through here.
fn needs_escape(s: &[u8]) -> bool {
    let bad = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let mut chunks = s.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |acc, &b| acc | bad(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| bad(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        #[test]
        fn string_literals_match_serde_json(s in "(\\PC|[\"\\\\\\x00-\\x1f]){0,70}") {
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            proptest::prop_assert_eq!(out, serde_json::to_vec(&s).unwrap());
            let byte_by_byte = s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(needs_escape(s.as_bytes()), byte_by_byte);
        }
    }

    /// A string and a list of strings, as the audit and Event readers hold them.
    #[derive(serde::Deserialize)]
    struct TwoStrings<'a> {
        #[serde(borrow)]
        a: Option<JsonStr<'a>>,
        #[serde(borrow)]
        b: Option<Vec<JsonStr<'a>>>,
    }

    proptest::proptest! {
        /// What `strings_from_json_text` relies on: serde_json borrows a string from JSON
        /// text only when it needs no escaping, so copying borrowed ones as they are writes
        /// exactly what escaping would.
        #[test]
        fn strings_read_from_json_text_write_like_serde_json(
            list in proptest::collection::vec("(\\PC|[\"\\\\\\x00-\\x1f]){0,40}", 0..4),
            single in "(\\PC|[\"\\\\\\x00-\\x1f]){0,40}",
        ) {
            let text = serde_json::to_string(&serde_json::json!({"a": single, "b": list})).unwrap();
            let read: TwoStrings<'_> = serde_json::from_str(&text).unwrap();
            let mut out = Vec::new();
            let mut w = ObjectWriter::open(&mut out).strings_from_json_text();
            w.list("l", &read.b);
            let mut o = w.object("o");
            o.str("s", &read.a);
            o.close();
            w.str("s", &read.a);
            w.close();
            let expected = serde_json::json!({"l": list, "o": {"s": single}, "s": single});
            proptest::prop_assert_eq!(out, serde_json::to_vec(&expected).unwrap());
        }
    }

    #[test]
    fn borrowed_strings_not_from_json_text_are_escaped() {
        // A `JsonStr` borrowed from a `Value` holds the decoded text: it must be escaped.
        let v = serde_json::json!({"s": "a\"b\\c\n"});
        let s = <JsonStr<'_> as serde::Deserialize>::deserialize(&v["s"]).unwrap();
        assert!(matches!(s.0, Cow::Borrowed(_)));
        let mut out = Vec::new();
        let mut w = ObjectWriter::open(&mut out);
        w.str("s", &Some(s));
        w.close();
        assert_eq!(out, br#"{"s":"a\"b\\c\n"}"#);
    }

    #[test]
    fn encoded_fields_read_like_a_map_and_edits_drop_the_text() {
        let mut f =
            Fields::from_encoded(r#"{"a":1,"obj":{"resource":"secrets"},"s":"x\"y"}"#.to_string());
        let obj = f.get_member("obj").unwrap();
        assert!(matches!(obj, Member::Encoded(_)));
        assert_eq!(obj.read::<Value>(), Some(json!({"resource": "secrets"})));
        #[derive(serde::Deserialize)]
        struct Probe<'a> {
            resource: &'a str,
        }
        assert_eq!(obj.read::<Probe<'_>>().map(|p| p.resource), Some("secrets"));
        assert!(f.get_member("missing").is_none());
        assert_eq!(
            f.encoded_members(),
            Some(r#""a":1,"obj":{"resource":"secrets"},"s":"x\"y""#)
        );
        assert_eq!(f["s"], "x\"y");
        assert_eq!(f.len(), 3);
        // Read only: still encoded.
        assert!(f.encoded_members().is_some());
        f.insert("b".into(), json!(2));
        assert_eq!(f.encoded_members(), None);
        let b = f.get_member("b").unwrap();
        assert!(matches!(b, Member::Value(_)));
        assert_eq!(b.read::<i64>(), Some(2));
        assert_eq!(
            f.get_member("obj")
                .unwrap()
                .read::<Probe<'_>>()
                .map(|p| p.resource),
            Some("secrets")
        );
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn json_strings_borrow_unless_escaped_even_inside_options_and_lists() {
        let s: TwoStrings<'_> = serde_json::from_str(r#"{"a":"plain","b":["x","tab\t"]}"#).unwrap();
        assert!(matches!(
            s.a.as_ref().map(|v| &v.0),
            Some(Cow::Borrowed("plain"))
        ));
        let b = s.b.unwrap();
        assert!(matches!(&b[0].0, Cow::Borrowed("x")));
        assert!(matches!(&b[1].0, Cow::Owned(t) if t == "tab\t"));
        assert!(serde_json::from_str::<JsonStr<'_>>("1").is_err());
    }

    #[test]
    fn indexed_members_are_found_without_parsing_and_read_like_parsed_ones() {
        let mut out = Vec::new();
        let mut index = MemberIndex::new();
        let mut f = ObjectWriter::open_indexed(&mut out, &mut index);
        f.str_opt("a", Some("x,\"y\":1"));
        let mut m = ObjectWriter::open(f.key("ab"));
        m.str_opt("a", Some("nested"));
        m.close();
        f.list(
            "b",
            &Some(vec![
                JsonStr(Cow::Borrowed("1")),
                JsonStr(Cow::Borrowed("2")),
            ]),
        );
        f.key("z").extend_from_slice(b"17");
        f.close();
        let text = String::from_utf8(out).unwrap();
        let indexed = Fields::from_encoded_indexed(text.clone(), index);
        let parsed = Fields::from_encoded(text);
        for key in ["a", "ab", "b", "z", "missing", "", "a\"", "zz"] {
            let i = indexed.get_member(key).and_then(|m| m.read::<Value>());
            let p = parsed.get_member(key).and_then(|m| m.read::<Value>());
            assert_eq!(i, p, "{key:?}");
            assert_eq!(i.as_ref(), parsed.get(key), "{key:?}");
        }
        assert!(matches!(
            indexed.get_member("ab"),
            Some(Member::Encoded(r#"{"a":"nested"}"#))
        ));
        assert!(matches!(
            indexed.get_member("z"),
            Some(Member::Encoded("17"))
        ));
        // Too many members for the index: found by parsing.
        let mut out = Vec::new();
        let mut index = MemberIndex::new();
        let mut f = ObjectWriter::open_indexed(&mut out, &mut index);
        for k in 0..30 {
            f.key(&format!("k{k:02}"))
                .extend_from_slice(k.to_string().as_bytes());
        }
        f.close();
        let many = Fields::from_encoded_indexed(String::from_utf8(out).unwrap(), index);
        assert_eq!(
            many.get_member("k29").and_then(|m| m.read::<u32>()),
            Some(29)
        );
    }

    #[test]
    fn a_map_converts_and_compares() {
        let mut m = Map::new();
        m.insert("k".into(), json!("v"));
        let f = Fields::from(m.clone());
        assert_eq!(f.encoded_members(), None);
        assert_eq!(f, Fields::from_encoded(r#"{"k":"v"}"#.into()));
        assert_eq!(*f, m);
        // Text that is not an object reads as no fields.
        assert!(Fields::from_encoded("[1]".into()).is_empty());
        assert!(Fields::from_encoded("[1]".into()).get_member("k").is_none());
    }

    #[test]
    fn strings_are_escaped_only_when_needed() {
        for s in ["plain", "quote\"", "back\\slash", "ctl\u{1}", "ünïcode", ""] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
