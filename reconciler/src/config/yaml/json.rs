//! The YAML tree as a JSON representation for `jsonschema`, so a document is validated in
//! place, without converting it to `serde_json::Value`.
//!
//! ```
//! use reconciler::config::yaml::{Mark, YamlJson, node_at, parse};
//!
//! let schema = serde_json::json!({"properties": {"port": {"type": "integer"}}});
//! let validator = jsonschema::options_for::<YamlJson>().build(&schema).unwrap();
//! let root = parse("name: edge\nport: eighty\n").unwrap().unwrap();
//! let marks: Vec<Mark> = validator
//!     .iter_errors(&root)
//!     .filter_map(|error| node_at(&root, error.instance_path().as_str()).map(|n| n.mark))
//!     .collect();
//! assert_eq!(marks, [Mark::new(2, 7)]);
//! ```
//!
//! Scalars are typed by [`Scalar::resolve`](super::Scalar::resolve) (YAML 1.2 core schema):
//! null, booleans, numbers and strings. Two YAML values have no JSON counterpart:
//! - `.nan`, `.inf` and `-.inf` are strings (their source text), so `type: number` rejects them;
//! - integers beyond the `u64`/`i64` range (up to `i128`) are numbers whose bound checks use their
//!   nearest `f64`, as `serde_json` does for such literals without `arbitrary_precision`.
//!
//! Mappings are objects whose member names are the keys' scalar texts, whatever their type
//! (`1: x` has the member `"1"`); the parser guarantees those names are unique.

use std::borrow::Cow;

use jsonschema::json::{Array, Json, JsonNumber, Node as JsonNode, NodeIdentity, Object, cmp};
use jsonschema::types::JsonType;
use serde_json::{Map, Number, Value};

use super::node::{Kind, Mark, Node, Resolved, Scalar, ScalarStyle};

/// The YAML tree as a `jsonschema` JSON representation: `Validator<YamlJson>` validates
/// `&Node` trees directly.
#[derive(Debug, Clone, Copy)]
pub struct YamlJson;

impl Json for YamlJson {
    type Node<'a> = &'a Node<'a>;
    type PreparedKey = String;
    type StringBuffer = ();

    /// Object lookups scan the keys, so one pass over the members always beats a few lookups.
    const KEYS_PER_LOOKUP: usize = 1 << 16;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(
        _buffer: &mut (),
        string: &str,
        f: impl FnOnce(Self::Node<'_>) -> T,
    ) -> T {
        // A quoted scalar is always a string; it borrows `string`, so nothing is copied.
        let node = Node {
            mark: Mark::default(),
            kind: Kind::Scalar(Scalar {
                text: Cow::Borrowed(string),
                style: ScalarStyle::DoubleQuoted,
            }),
        };
        f(&node)
    }
}

/// What a scalar is in JSON.
enum JsonScalar<'a> {
    Null,
    Bool(bool),
    Number(YamlNumber),
    String(&'a str),
}

fn json_scalar<'a>(scalar: &'a Scalar<'a>) -> JsonScalar<'a> {
    match scalar.resolve() {
        Resolved::Null => JsonScalar::Null,
        Resolved::Bool(b) => JsonScalar::Bool(b),
        Resolved::Int(i) => JsonScalar::Number(YamlNumber::Int(i)),
        Resolved::Float(f) if f.is_finite() => JsonScalar::Number(YamlNumber::Float(f)),
        // NaN and infinities are not JSON numbers.
        Resolved::Float(_) => JsonScalar::String(&scalar.text),
        Resolved::Str(s) => JsonScalar::String(s),
    }
}

/// A member name: the key's text (collections, which the parser never lets through as keys,
/// are named "").
fn member_name<'a>(key: &'a Node<'a>) -> &'a str {
    key.as_scalar().map_or("", |s| &s.text)
}

impl<'a> JsonNode<'a, YamlJson> for &'a Node<'a> {
    type Object = YamlObject<'a>;
    type Array = YamlArray<'a>;
    type Number = YamlNumber;

    fn as_object(&self) -> Option<YamlObject<'a>> {
        match &self.kind {
            Kind::Mapping(pairs) => Some(YamlObject(pairs)),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<YamlArray<'a>> {
        match &self.kind {
            Kind::Sequence(items) => Some(YamlArray(items)),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match &self.kind {
            Kind::Scalar(s) => match json_scalar(s) {
                JsonScalar::String(s) => Some(Cow::Borrowed(s)),
                _ => None,
            },
            _ => None,
        }
    }

    fn as_number(&self) -> Option<YamlNumber> {
        match &self.kind {
            Kind::Scalar(s) => match json_scalar(s) {
                JsonScalar::Number(n) => Some(n),
                _ => None,
            },
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match &self.kind {
            Kind::Scalar(s) => match json_scalar(s) {
                JsonScalar::Bool(b) => Some(b),
                _ => None,
            },
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar(s) if matches!(json_scalar(s), JsonScalar::Null))
    }

    fn json_type(&self) -> JsonType {
        match &self.kind {
            Kind::Mapping(_) => JsonType::Object,
            Kind::Sequence(_) => JsonType::Array,
            Kind::Scalar(s) => match json_scalar(s) {
                JsonScalar::Null => JsonType::Null,
                JsonScalar::Bool(_) => JsonType::Boolean,
                JsonScalar::Number(_) => JsonType::Number,
                JsonScalar::String(_) => JsonType::String,
            },
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // Scalars compare without building a `Value` (`enum`/`const` run this per instance).
        match &self.kind {
            Kind::Scalar(s) => match (json_scalar(s), expected) {
                (JsonScalar::Null, Value::Null) => true,
                (JsonScalar::Bool(a), Value::Bool(b)) => a == *b,
                (JsonScalar::Number(a), Value::Number(b)) => cmp::equal_numbers(&a, b),
                (JsonScalar::String(a), Value::String(b)) => a == b,
                _ => false,
            },
            _ => cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(to_value(self))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(
            std::ptr::from_ref::<Node<'_>>(*self) as usize
        ))
    }
}

/// Converts a tree to a `serde_json::Value` (cold paths: error reports). Recursion is bounded
/// by the parser's depth limit.
pub fn to_value(node: &Node<'_>) -> Value {
    match &node.kind {
        Kind::Scalar(s) => match json_scalar(s) {
            JsonScalar::Null => Value::Null,
            JsonScalar::Bool(b) => Value::Bool(b),
            JsonScalar::Number(n) => Value::Number(n.number()),
            JsonScalar::String(s) => Value::String(s.to_owned()),
        },
        Kind::Sequence(items) => Value::Array(items.iter().map(to_value).collect()),
        Kind::Mapping(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (member_name(k).to_owned(), to_value(v)))
                .collect::<Map<_, _>>(),
        ),
    }
}

/// A mapping seen as a JSON object.
#[derive(Debug, Clone, Copy)]
pub struct YamlObject<'a>(&'a [(Node<'a>, Node<'a>)]);

impl<'a> Object<'a, YamlJson> for YamlObject<'a> {
    type Node = &'a Node<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, key: &String) -> Option<&'a Node<'a>> {
        self.0
            .iter()
            .find(|(k, _)| member_name(k) == key)
            .map(|(_, v)| v)
    }

    fn members(&self) -> Members<'a> {
        Members(self.0.iter())
    }
}

/// The members of a [`YamlObject`], in source order.
#[derive(Debug, Clone)]
pub struct Members<'a>(std::slice::Iter<'a, (Node<'a>, Node<'a>)>);

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, &'a Node<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (member_name(k), v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// A sequence seen as a JSON array.
#[derive(Debug, Clone, Copy)]
pub struct YamlArray<'a>(&'a [Node<'a>]);

impl<'a> Array<'a, YamlJson> for YamlArray<'a> {
    type Node = &'a Node<'a>;
    type ElementsIter = std::slice::Iter<'a, Node<'a>>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn elements(&self) -> Self::ElementsIter {
        self.0.iter()
    }
}

/// A numeric scalar seen as a JSON number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum YamlNumber {
    /// A core-schema integer (decimal, `0o`, `0x`).
    Int(i128),
    /// A finite core-schema float.
    Float(f64),
}

impl YamlNumber {
    /// The nearest `serde_json::Number`: exact for integers within `i64`/`u64`, else the
    /// nearest `f64`.
    fn number(self) -> Number {
        match self {
            Self::Int(i) => {
                if let Ok(u) = u64::try_from(i) {
                    Number::from(u)
                } else if let Ok(s) = i64::try_from(i) {
                    Number::from(s)
                } else {
                    float_number(i as f64)
                }
            }
            Self::Float(f) => float_number(f),
        }
    }
}

fn float_number(f: f64) -> Number {
    // Only finite floats reach here; zero is a fallback that keeps this panic-free.
    Number::from_f64(f).unwrap_or_else(|| Number::from(0u8))
}

impl JsonNumber for YamlNumber {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Int(i) => u64::try_from(i).ok(),
            Self::Float(_) => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::Int(i) => i64::try_from(i).ok(),
            Self::Float(_) => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        })
    }

    fn as_str(&self) -> Cow<'_, str> {
        Cow::Owned(match *self {
            Self::Int(i) => i.to_string(),
            // `Debug` writes the shortest round-tripping form, always a valid JSON number.
            Self::Float(f) => format!("{f:?}"),
        })
    }

    fn to_number(&self) -> Cow<'_, Number> {
        Cow::Owned(self.number())
    }

    fn is_integer(&self) -> bool {
        match *self {
            Self::Int(_) => true,
            Self::Float(f) => f.fract() == 0.0,
        }
    }

    fn is_written_as_integer(&self) -> bool {
        matches!(self, Self::Int(_))
    }
}

/// The node an error's instance path (a JSON pointer such as
/// `ValidationError::instance_path().as_str()`, with `~0`/`~1` escapes) points at.
///
/// Segments name mapping members by their keys' text and sequence items by index; `""` is the
/// root. `None` if the path leads nowhere.
pub fn node_at<'n>(root: &'n Node<'n>, pointer: &str) -> Option<&'n Node<'n>> {
    if pointer.is_empty() {
        return Some(root);
    }
    let mut node = root;
    for segment in pointer.strip_prefix('/')?.split('/') {
        node = match &node.kind {
            Kind::Mapping(pairs) => {
                let name = unescape(segment);
                pairs
                    .iter()
                    .find(|(k, _)| member_name(k) == name)
                    .map(|(_, v)| v)?
            }
            Kind::Sequence(items) => items.get(index(segment)?)?,
            Kind::Scalar(_) => return None,
        };
    }
    Some(node)
}

/// A JSON pointer array index: `0` or digits without a leading zero.
fn index(segment: &str) -> Option<usize> {
    if segment.len() > 1 && segment.starts_with('0') {
        return None;
    }
    if !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

fn unescape(segment: &str) -> Cow<'_, str> {
    if segment.contains('~') {
        Cow::Owned(segment.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(segment)
    }
}
