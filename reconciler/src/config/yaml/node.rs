//! The YAML document tree kfd works on: every node keeps the mark where it
//! starts, so every later error (schema, semantic, BTF encoding) can name
//! `file:line:col`.
//!
//! Scalars keep their source text and style; typing follows the YAML 1.2 core
//! schema and happens on demand ([`Scalar::resolve`]), so the BTF encoder can
//! read `10.0.0.0/8` or `0x0a` exactly as written.

use std::borrow::Cow;
use std::fmt;

/// A position in a source file: 1-based line, 1-based column counted in
/// characters (not bytes), which is what editors show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mark {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in Unicode scalar values.
    pub col: u32,
}

impl Mark {
    /// A mark at `line:col` (both 1-based).
    pub const fn new(line: u32, col: u32) -> Self {
        Self { line, col }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// How a scalar was written. Quoted and block scalars are always strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    /// `foo`, `10`, `~`
    Plain,
    /// `'foo'`
    SingleQuoted,
    /// `"foo"`
    DoubleQuoted,
    /// `|`
    Literal,
    /// `>`
    Folded,
}

/// A scalar: its text after unescaping/folding, and how it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar<'a> {
    /// The scalar's value as YAML defines it (escapes resolved, folding applied).
    pub text: Cow<'a, str>,
    /// How it was written.
    pub style: ScalarStyle,
}

/// A node of the document tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'a> {
    /// Where the node starts in the source.
    pub mark: Mark,
    /// What it is.
    pub kind: Kind<'a>,
}

/// The three YAML node kinds. Aliases are expanded by the parser.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind<'a> {
    /// A scalar.
    Scalar(Scalar<'a>),
    /// A sequence, in source order.
    Sequence(Vec<Node<'a>>),
    /// A mapping, in source order. Keys are unique (the parser rejects duplicates).
    Mapping(Vec<(Node<'a>, Node<'a>)>),
}

/// A scalar typed by the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved<'s> {
    /// `~`, `null`, `Null`, `NULL` or empty (plain only).
    Null,
    /// `true`/`True`/`TRUE`/`false`/`False`/`FALSE` (plain only).
    Bool(bool),
    /// Decimal `[-+]?[0-9]+`, `0o[0-7]+` or `0x[0-9a-fA-F]+` (plain only).
    /// i128 holds every u64 and i64 so range checks can be exact.
    Int(i128),
    /// Core-schema floats, `.inf`, `-.inf`, `.nan` (plain only).
    Float(f64),
    /// Everything else, and every non-plain scalar.
    Str(&'s str),
}

impl Scalar<'_> {
    /// Types the scalar by the YAML 1.2 core schema. Non-plain scalars are strings.
    pub fn resolve(&self) -> Resolved<'_> {
        let text: &str = &self.text;
        if self.style != ScalarStyle::Plain {
            return Resolved::Str(text);
        }
        match text {
            "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
            "true" | "True" | "TRUE" => return Resolved::Bool(true),
            "false" | "False" | "FALSE" => return Resolved::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
                return Resolved::Float(f64::INFINITY);
            }
            "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
            _ => {}
        }
        if let Some(int) = resolve_int(text) {
            return Resolved::Int(int);
        }
        if is_core_float(text)
            && let Ok(float) = text.parse::<f64>()
        {
            return Resolved::Float(float);
        }
        Resolved::Str(text)
    }
}

fn resolve_int(text: &str) -> Option<i128> {
    if let Some(hex) = text.strip_prefix("0x") {
        return all_digits(hex, 16).then(|| i128::from_str_radix(hex, 16).ok())?;
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return all_digits(oct, 8).then(|| i128::from_str_radix(oct, 8).ok())?;
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if all_digits(digits, 10) {
        return text.parse::<i128>().ok();
    }
    None
}

fn all_digits(s: &str, radix: u32) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_digit(radix))
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if int_digits == 0 && i == frac_start {
            return false;
        }
    } else if int_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

impl<'a> Node<'a> {
    /// The scalar, if this node is one.
    pub fn as_scalar(&self) -> Option<&Scalar<'a>> {
        match &self.kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar's text if it resolves to a string (quoted, or plain and not null/bool/number).
    pub fn as_str(&self) -> Option<&str> {
        match self.as_scalar()?.resolve() {
            Resolved::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The mapping's pairs, if this node is a mapping.
    pub fn as_mapping(&self) -> Option<&[(Node<'a>, Node<'a>)]> {
        match &self.kind {
            Kind::Mapping(m) => Some(m),
            _ => None,
        }
    }

    /// The sequence's items, if this node is a sequence.
    pub fn as_sequence(&self) -> Option<&[Node<'a>]> {
        match &self.kind {
            Kind::Sequence(s) => Some(s),
            _ => None,
        }
    }

    /// Looks a key up in a mapping by its scalar text (first match; keys are unique).
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.as_mapping()?
            .iter()
            .find(|(k, _)| k.as_scalar().is_some_and(|s| s.text == key))
            .map(|(_, v)| v)
    }

    /// A short name of the node's kind, for error messages ("a mapping", "a string", ...).
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Mapping(_) => "a mapping",
            Kind::Sequence(_) => "a list",
            Kind::Scalar(s) => match s.resolve() {
                Resolved::Null => "null",
                Resolved::Bool(_) => "a boolean",
                Resolved::Int(_) => "an integer",
                Resolved::Float(_) => "a float",
                Resolved::Str(_) => "a string",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> Scalar<'_> {
        Scalar {
            text: Cow::Borrowed(text),
            style: ScalarStyle::Plain,
        }
    }

    #[test]
    fn core_schema_resolution() {
        assert_eq!(plain("").resolve(), Resolved::Null);
        assert_eq!(plain("~").resolve(), Resolved::Null);
        assert_eq!(plain("True").resolve(), Resolved::Bool(true));
        assert_eq!(plain("yes").resolve(), Resolved::Str("yes"));
        assert_eq!(plain("0x0A").resolve(), Resolved::Int(10));
        assert_eq!(plain("0o17").resolve(), Resolved::Int(15));
        assert_eq!(plain("-42").resolve(), Resolved::Int(-42));
        assert_eq!(
            plain("18446744073709551615").resolve(),
            Resolved::Int(u64::MAX.into())
        );
        assert_eq!(plain("1.5").resolve(), Resolved::Float(1.5));
        assert_eq!(plain("1e3").resolve(), Resolved::Float(1000.0));
        assert_eq!(plain("192.0.2.1").resolve(), Resolved::Str("192.0.2.1"));
        assert_eq!(plain("10.0.0.0/8").resolve(), Resolved::Str("10.0.0.0/8"));
        assert_eq!(plain("0x").resolve(), Resolved::Str("0x"));
        assert_eq!(plain("1_000").resolve(), Resolved::Str("1_000"));
        let quoted = Scalar {
            text: Cow::Borrowed("10"),
            style: ScalarStyle::DoubleQuoted,
        };
        assert_eq!(quoted.resolve(), Resolved::Str("10"));
    }
}
