//! The one error type of the YAML layer.

use super::node::Mark;

/// Deepest nesting of collections a document may have (the root collection is level 1).
///
/// Deeper documents are rejected before anything recursive (tree drop, clone, JSON conversion,
/// schema validation) can run out of stack on them.
pub const MAX_DEPTH: usize = 64;

/// Why a YAML document was rejected.
///
/// Every variant carries the [`Mark`] it is about; [`YamlError::mark`] returns it. The
/// [`Display`](std::fmt::Display) text is lowercase and leaves the mark out, so callers print
/// `file:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    /// The text is not YAML; `message` is the YAML parser's own description.
    #[error("{message}")]
    Syntax {
        /// Where the parser gave up.
        mark: Mark,
        /// The parser's message, without the position it may embed.
        message: String,
    },
    /// Collections nest deeper than [`MAX_DEPTH`] levels (directly, or through an alias).
    #[error("collections nest deeper than {limit} levels")]
    TooDeep {
        /// The collection (or alias) that goes one level too deep.
        mark: Mark,
        /// The limit, [`MAX_DEPTH`].
        limit: usize,
    },
    /// Anchors and aliases would materialise more nodes than allowed (billion laughs); see
    /// the budget in the module documentation.
    #[error("anchors and aliases expand to more than {limit} nodes")]
    AliasBudget {
        /// The alias (or anchor) that went over the budget.
        mark: Mark,
        /// The budget that was exceeded.
        limit: usize,
    },
    /// An alias refers to a node that is still being defined, i.e. to one of its ancestors.
    #[error("alias refers to a node that contains it")]
    RecursiveAlias {
        /// The alias.
        mark: Mark,
    },
    /// A mapping has the same key twice.
    #[error("duplicate key {key:?} (first defined at {first})")]
    DuplicateKey {
        /// The key's text.
        key: String,
        /// The second occurrence.
        mark: Mark,
        /// The first occurrence.
        first: Mark,
    },
    /// The file holds more than one YAML document.
    #[error("a file must hold a single yaml document, found a second one")]
    MultipleDocuments {
        /// Start of the second document.
        mark: Mark,
    },
    /// A tag other than `!!str` or the non-specific `!`.
    #[error("unsupported tag `{tag}` (only `!!str` and `!` are supported)")]
    UnsupportedTag {
        /// The tag as written (`!!int`, `!foo`, `!<tag:example.com:x>`).
        tag: String,
        /// The tagged node.
        mark: Mark,
    },
    /// A `%YAML` directive for a version kfd does not read (YAML 1.2 §6.8.1: a processor
    /// rejects another major version; the text may mean something else under it).
    #[error("unsupported yaml version {version} (only 1.x is read)")]
    UnsupportedVersion {
        /// The version as written.
        version: String,
        /// The directive.
        mark: Mark,
    },
    /// A mapping key is a sequence or a mapping.
    #[error("a mapping key must be a scalar, not a collection")]
    ComplexKey {
        /// The key (or the alias standing for it).
        mark: Mark,
    },
}

impl YamlError {
    /// Where the error is.
    pub fn mark(&self) -> Mark {
        match self {
            Self::Syntax { mark, .. }
            | Self::TooDeep { mark, .. }
            | Self::AliasBudget { mark, .. }
            | Self::RecursiveAlias { mark }
            | Self::DuplicateKey { mark, .. }
            | Self::MultipleDocuments { mark }
            | Self::UnsupportedTag { mark, .. }
            | Self::UnsupportedVersion { mark, .. }
            | Self::ComplexKey { mark } => *mark,
        }
    }
}
