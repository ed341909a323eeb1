//! `schema/kf.schema.json`, enforced with `jsonschema` directly on the YAML
//! tree (no conversion, so a 1,000,000-entry file costs one walk), and its
//! errors mapped back to the marks of the nodes they are about.

use std::sync::OnceLock;

use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;

use super::error::{ConfigError, ErrorKind};
use super::yaml::{Node, YamlJson, node_at};

/// The schema as shipped (also installed for editors).
pub const SCHEMA: &str = include_str!("../../../schema/kf.schema.json");

/// Errors reported per file before giving up on listing more.
const MAX_ERRORS: usize = 20;

fn validator() -> &'static Validator<YamlJson> {
    static V: OnceLock<Validator<YamlJson>> = OnceLock::new();
    V.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(SCHEMA).expect("the bundled schema is JSON (tested)");
        jsonschema::options_for::<YamlJson>()
            .build(&schema)
            .expect("the bundled schema compiles (tested)")
    })
}

/// Validates a document; errors point at the offending node.
pub fn check(file: &str, root: &Node<'_>) -> Vec<ConfigError> {
    let v = validator();
    if v.is_valid(root) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for e in v.iter_errors(root) {
        if out.len() == MAX_ERRORS {
            break;
        }
        let pointer = e.instance_path().as_str().to_owned();
        let node = node_at(root, &pointer).unwrap_or(root);
        let (mark, path, message) = match e.kind() {
            // Point at the unexpected key itself, which is what needs deleting.
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let key = unexpected.first().map(String::as_str).unwrap_or("");
                let key_node = node
                    .as_mapping()
                    .and_then(|m| {
                        m.iter()
                            .find(|(k, _)| k.as_scalar().is_some_and(|s| s.text == key))
                    })
                    .map(|(k, _)| k);
                let known = allowed_keys(&pointer);
                (
                    key_node.map_or(node.mark, |k| k.mark),
                    join_path(&pointer, key),
                    format!(
                        "unknown field {key:?}{}",
                        if known.is_empty() {
                            String::new()
                        } else {
                            format!(" (expected one of: {known})")
                        }
                    ),
                )
            }
            ValidationErrorKind::Required { property } => (
                node.mark,
                display_path(&pointer),
                format!(
                    "missing required field {}",
                    property.as_str().unwrap_or("?")
                ),
            ),
            _ => {
                let msg = if node.as_scalar().is_some() {
                    e.to_string()
                } else {
                    e.masked_with(node.describe()).to_string()
                };
                (node.mark, display_path(&pointer), shorten(&msg))
            }
        };
        out.push(ConfigError::at(
            file,
            mark,
            ErrorKind::Schema {
                path: if path.is_empty() {
                    "(document)".into()
                } else {
                    path
                },
                message: lowercase_first(&message),
            },
        ));
    }
    out
}

/// `/functions/0/maps/deny_v4` → `functions[0].maps.deny_v4`.
pub fn display_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&path_segment(&seg));
        }
    }
    out
}

/// A key as a path segment: quoted when it is not a plain name, so a key
/// holding a newline or a dot cannot break or fake the path.
fn path_segment(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if plain {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn join_path(pointer: &str, key: &str) -> String {
    let base = display_path(pointer);
    if base.is_empty() {
        path_segment(key)
    } else {
        format!("{base}.{}", path_segment(key))
    }
}

/// The fields the schema allows at a location, for "did you mean" help.
fn allowed_keys(pointer: &str) -> String {
    let segs: Vec<&str> = pointer.split('/').skip(1).collect();
    let keys: &[&str] = match segs.as_slice() {
        [] => &["version", "chains", "functions"],
        ["chains", _] => &[
            "interface",
            "hook",
            "netns",
            "xdp_mode",
            "tc_attach",
            "tc_position",
            "tc_priority",
        ],
        ["functions", _] => &[
            "name",
            "interface",
            "interfaces",
            "netns",
            "hook",
            "priority",
            "program",
            "proceed_on",
            "globals",
            "maps",
        ],
        ["functions", _, "program"] => &["builtin", "object", "section", "program", "sha256"],
        ["functions", _, "maps", _] => &["update", "swap_threshold", "entries"],
        ["functions", _, "maps", _, "entries", _] => &["key", "value"],
        _ => &[],
    };
    keys.join(", ")
}

fn shorten(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first)
            if first.is_ascii_uppercase()
                && !c.clone().next().is_some_and(|n| n.is_ascii_uppercase()) =>
        {
            first.to_ascii_lowercase().to_string() + c.as_str()
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    fn errors(src: &str) -> Vec<String> {
        let root = parse(src).expect("yaml").expect("doc");
        check("f.yaml", &root)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_bundled_schema_compiles() {
        let _ = validator();
    }

    #[test]
    fn a_valid_file_passes() {
        let src = "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklist}\n    maps:\n      deny_v4:\n        entries:\n          - {key: 192.0.2.0/24, value: 1}\n";
        assert_eq!(errors(src), Vec::<String>::new());
    }

    #[test]
    fn errors_point_at_the_node() {
        let src = "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdpp\n    program: {builtin: blocklist}\n";
        assert_eq!(
            errors(src),
            [
                r#"f.yaml:5:11: functions[0].hook: "xdpp" is not one of "xdp", "tc-ingress" or "tc-egress""#
            ]
        );
    }

    #[test]
    fn unknown_fields_point_at_the_key_and_list_valid_ones() {
        let src = "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    prio: 3\n    program: {builtin: blocklist}\n";
        assert_eq!(
            errors(src),
            [
                "f.yaml:6:5: functions[0].prio: unknown field \"prio\" (expected one of: name, interface, interfaces, netns, hook, priority, program, proceed_on, globals, maps)"
            ]
        );
    }

    #[test]
    fn missing_fields_and_bad_types() {
        let src = "version: 2\nfunctions:\n  - name: Bad_Name\n    hook: xdp\n    interface: eth0\n    priority: 0\n";
        let e = errors(src);
        assert!(
            e.iter().any(|m| m.starts_with("f.yaml:1:10: version:")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("f.yaml:3:5: functions[0]: missing required field program")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("f.yaml:3:11: functions[0].name:")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m
                    .starts_with("f.yaml:6:15: functions[0].priority: 0 is less than the minimum")),
            "{e:?}"
        );
    }

    #[test]
    fn entries_need_key_and_value() {
        let src = "version: 1\nfunctions:\n  - name: bl\n    interface: eth0\n    hook: xdp\n    program: {builtin: blocklist}\n    maps:\n      deny_v4:\n        entries:\n          - key: 10.0.0.0/8\n";
        assert_eq!(
            errors(src),
            ["f.yaml:10:13: functions[0].maps.deny_v4.entries[0]: missing required field value"]
        );
    }
}
