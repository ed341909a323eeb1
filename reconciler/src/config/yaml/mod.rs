//! YAML → [`Node`] tree with marks, and that tree as a `jsonschema` instance.
//!
//! [`parse`] reads one YAML document. Two parsers sit behind it:
//! - a *fast* path, hand-written for the subset of YAML config files use (block collections,
//!   single-line flow collections and scalars, comments); it borrows every scalar that needs no
//!   unescaping from the source and builds the tree in one pass;
//! - a *full* path on `saphyr-parser` events for everything else (anchors and aliases, tags,
//!   block scalars, multi-line scalars, ...), which is several times slower.
//!
//! The fast path gives up on anything outside its subset, and on anything that might be an
//! error, and [`parse`] then re-parses with the full path. Whenever the fast path does finish,
//! its result is exactly the full path's (tree, marks, texts, styles, errors); the tests check
//! this differentially.
//!
//! # Rules beyond plain YAML
//!
//! Both paths enforce them, and report them as [`YamlError`]s:
//! - one document per file;
//! - at most [`MAX_DEPTH`] nested collections, also through aliases, so nothing recursive over
//!   a tree (drop, clone, JSON conversion, validation) can exhaust the stack;
//! - unique keys in a mapping, compared by scalar text after unescaping (`a` and `"a"` clash),
//!   which is also the JSON member name; keys must be scalars;
//! - only the tags `!!str` (and its spellings `!<tag:yaml.org,2002:str>` or a `%TAG` handle
//!   expanding to it) and the non-specific `!`; both make a plain scalar a string, recorded as
//!   [`ScalarStyle::DoubleQuoted`] so [`Scalar::resolve`] types it as one;
//! - aliases are expanded into copies of the anchored node, marks included, within a budget:
//!   the nodes materialised for anchors (the copy kept for later aliases) and aliases may not
//!   exceed `max(1_000_000, 4 × parser events read so far)`. Without aliases a tree has at most
//!   one node per event, so memory stays linear in the input, and a billion-laughs document
//!   fails after about a million copied nodes.
//!
//! # Marks
//!
//! Marks are `saphyr-parser`'s, made 1-based: a node starts at its first token (its anchor or
//! tag if it has one). A block mapping starts at its first key; a block sequence at its first
//! `-`, except one at its parent key's indentation (`key:\n- a`), which starts where its first
//! entry's content starts; an empty value (`key:`) sits at its `:`; a block scalar starts at
//! its content, not at `|` or `>`.
//!
//! [`YamlJson`] lets a `jsonschema::Validator<YamlJson>` validate a tree in place, and
//! [`node_at`] maps an error's instance path back to a node, hence to a mark.

mod error;
mod fast;
mod full;
mod json;
mod node;
mod tree;

#[cfg(test)]
mod tests;

pub use error::{MAX_DEPTH, YamlError};
pub use json::{Members, YamlArray, YamlJson, YamlNumber, YamlObject, node_at, to_value};
pub use node::{Kind, Mark, Node, Resolved, Scalar, ScalarStyle};

/// Parses one YAML document into a tree; `None` for an empty one (nothing, only comments, or
/// a bare `---`).
///
/// Scalars are borrowed from `src` wherever their text appears there verbatim.
///
/// # Errors
///
/// Syntax errors, and kfd's extra rules: see [`YamlError`].
pub fn parse(src: &str) -> Result<Option<Node<'_>>, YamlError> {
    match fast::parse(src) {
        Ok(result) => result,
        Err(fast::Unsupported) => full::parse(src),
    }
}
