//! Files → desired state: parse with marks, schema, semantic checks, merge, last-good.
pub mod yaml;
