//! YAML → [`Node`] tree with marks.
mod node;
pub use node::{Kind, Mark, Node, Resolved, Scalar, ScalarStyle};
