//! Tree assembly shared by the fast and the full parser.
//!
//! Both parsers build bottom-up on two scratch stacks, one of sequence items and one of mapping
//! entries: an open collection remembers where its children start on its stack, and when it
//! closes they are drained into a `Vec` of exactly the right size. Two stacks for the whole
//! document mean no per-collection growth and no recursion when building.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use super::node::{Kind, Mark, Node, Scalar, ScalarStyle};

/// Mappings up to this many keys check for duplicates by scanning; bigger ones hash.
const LINEAR_KEYS: usize = 16;

/// The keys of one open mapping, to reject duplicates.
///
/// Keys are compared by their scalar text (after unescaping), which is also the member name a
/// JSON view of the mapping would use, so a mapping that passes has unique JSON member names.
#[derive(Default)]
pub(super) struct KeySet {
    /// Hashes of every key so far, once the mapping has outgrown [`LINEAR_KEYS`].
    hashed: Option<HashSet<u64>>,
}

impl KeySet {
    /// Checks `key` against the keys already in the mapping whose entries so far are
    /// `entries`. Returns the mark of the earlier equal key.
    pub(super) fn check(
        &mut self,
        entries: &[(Node<'_>, Node<'_>)],
        key: &Node<'_>,
        hasher: &RandomState,
    ) -> Option<Mark> {
        let text = key_text(key)?;
        if self.hashed.is_none() {
            if entries.len() < LINEAR_KEYS {
                return find_key(entries, text);
            }
            let mut set = HashSet::with_capacity(entries.len() * 2);
            set.extend(
                entries
                    .iter()
                    .filter_map(|(k, _)| key_text(k))
                    .map(|t| hasher.hash_one(t)),
            );
            self.hashed = Some(set);
        }
        let set = self.hashed.as_mut()?;
        if set.insert(hasher.hash_one(text)) {
            None
        } else {
            // Seen hash: a real duplicate, or (astronomically rarely) a 64-bit collision.
            find_key(entries, text)
        }
    }
}

/// The text of a scalar key; collections have none (they are rejected separately).
pub(super) fn key_text<'n>(node: &'n Node<'_>) -> Option<&'n str> {
    node.as_scalar().map(|s| &*s.text)
}

fn find_key(entries: &[(Node<'_>, Node<'_>)], text: &str) -> Option<Mark> {
    entries
        .iter()
        .find(|(k, _)| key_text(k) == Some(text))
        .map(|(k, _)| k.mark)
}

/// Moves the children of a closing collection off its scratch stack.
pub(super) fn take<T>(stack: &mut Vec<T>, start: usize) -> Vec<T> {
    if start == 0 && stack.len() >= TAKE_WHOLE {
        // A big collection that is the whole stack (the usual shape of a huge list or map):
        // hand the stack over instead of copying it; shrinking a big allocation is cheap.
        let mut whole = std::mem::take(stack);
        whole.shrink_to_fit();
        return whole;
    }
    let start = start.min(stack.len());
    stack.drain(start..).collect()
}

/// From how many children on an otherwise empty stack [`take`] hands over the stack itself.
const TAKE_WHOLE: usize = 1 << 12;

/// A scalar node.
pub(super) fn scalar<'a>(mark: Mark, text: Cow<'a, str>, style: ScalarStyle) -> Node<'a> {
    Node {
        mark,
        kind: Kind::Scalar(Scalar { text, style }),
    }
}

/// The empty plain scalar YAML puts where a value is missing (`key:`, `-`).
pub(super) fn empty<'a>(mark: Mark) -> Node<'a> {
    scalar(mark, Cow::Borrowed(""), ScalarStyle::Plain)
}
