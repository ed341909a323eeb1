//! Tests for the YAML layer: both parsers, their equivalence, and the JSON view.

use std::borrow::Cow;

use proptest::prelude::*;

use super::*;

/// Parses with both paths; whenever the fast one finishes, its result must be the full one's.
fn both(src: &str) -> Result<Option<Node<'_>>, YamlError> {
    let full = full::parse(src);
    if let Ok(fast) = fast::parse(src) {
        assert_eq!(fast, full, "fast and full paths disagree on {src:?}");
    }
    full
}

/// Whether the fast path takes `src`.
fn fast_accepts(src: &str) -> bool {
    fast::parse(src).is_ok()
}

/// Parses with both paths and requires a document.
fn doc(src: &str) -> Node<'_> {
    match both(src) {
        Ok(Some(node)) => node,
        other => panic!("{src:?}: {other:?}"),
    }
}

/// Like [`doc`], and requires the fast path to have taken the input.
fn fast_doc(src: &str) -> Node<'_> {
    assert!(fast_accepts(src), "the fast path refused {src:?}");
    doc(src)
}

/// Parses with both paths and requires an error.
fn error(src: &str) -> YamlError {
    match both(src) {
        Err(e) => e,
        Ok(tree) => panic!("{src:?} parsed: {tree:?}"),
    }
}

fn styled(line: u32, col: u32, text: &str, style: ScalarStyle) -> Node<'_> {
    Node {
        mark: Mark::new(line, col),
        kind: Kind::Scalar(Scalar {
            text: Cow::Borrowed(text),
            style,
        }),
    }
}

fn s(line: u32, col: u32, text: &str) -> Node<'_> {
    styled(line, col, text, ScalarStyle::Plain)
}

fn seq(line: u32, col: u32, items: Vec<Node<'_>>) -> Node<'_> {
    Node {
        mark: Mark::new(line, col),
        kind: Kind::Sequence(items),
    }
}

fn map<'a>(line: u32, col: u32, pairs: Vec<(Node<'a>, Node<'a>)>) -> Node<'a> {
    Node {
        mark: Mark::new(line, col),
        kind: Kind::Mapping(pairs),
    }
}

// ---------------------------------------------------------------------------------------------
// Trees and marks
// ---------------------------------------------------------------------------------------------

#[test]
fn block_mapping_marks_and_empty_values() {
    assert_eq!(
        fast_doc("a: 1\nb:\nc: x\nd: # c\ne:"),
        map(
            1,
            1,
            vec![
                (s(1, 1, "a"), s(1, 4, "1")),
                // An empty value sits at its `:`.
                (s(2, 1, "b"), s(2, 2, "")),
                (s(3, 1, "c"), s(3, 4, "x")),
                (s(4, 1, "d"), s(4, 2, "")),
                (s(5, 1, "e"), s(5, 2, "")),
            ]
        )
    );
}

#[test]
fn sequence_at_its_keys_indentation() {
    // saphyr starts such a sequence (and an empty entry) after the `-` and its blanks.
    assert_eq!(
        fast_doc("k:\n- a\n-\n- b: c\n  d:\nz: 1\n"),
        map(
            1,
            1,
            vec![
                (
                    s(1, 1, "k"),
                    seq(
                        2,
                        3,
                        vec![
                            s(2, 3, "a"),
                            s(3, 2, ""),
                            map(
                                4,
                                3,
                                vec![(s(4, 3, "b"), s(4, 6, "c")), (s(5, 3, "d"), s(5, 4, ""))]
                            ),
                        ]
                    )
                ),
                (s(6, 1, "z"), s(6, 4, "1")),
            ]
        )
    );
    // ... and after a comment on that line too.
    assert_eq!(
        fast_doc("k:\n-   # c\n  a: 1\n- # x\n"),
        map(
            1,
            1,
            vec![(
                s(1, 1, "k"),
                seq(
                    2,
                    8,
                    vec![map(3, 3, vec![(s(3, 3, "a"), s(3, 6, "1"))]), s(4, 6, "")]
                )
            )]
        )
    );
}

#[test]
fn indented_and_compact_sequences() {
    assert_eq!(
        fast_doc("k:\n  - a\n  -   b\n"),
        map(
            1,
            1,
            vec![(s(1, 1, "k"), seq(2, 3, vec![s(2, 5, "a"), s(3, 7, "b")]))]
        )
    );
    assert_eq!(
        fast_doc("- - a\n  - b\n- c: d\n  e: f\n-\n  - g\n"),
        seq(
            1,
            1,
            vec![
                seq(1, 3, vec![s(1, 5, "a"), s(2, 5, "b")]),
                map(
                    3,
                    3,
                    vec![(s(3, 3, "c"), s(3, 6, "d")), (s(4, 3, "e"), s(4, 6, "f"))]
                ),
                seq(6, 3, vec![s(6, 5, "g")]),
            ]
        )
    );
}

#[test]
fn flow_collections() {
    assert_eq!(
        fast_doc(r#"{a: [1, 'x'], "b": {}, c: []}"#),
        map(
            1,
            1,
            vec![
                (
                    s(1, 2, "a"),
                    seq(
                        1,
                        5,
                        vec![s(1, 6, "1"), styled(1, 9, "x", ScalarStyle::SingleQuoted)]
                    )
                ),
                (
                    styled(1, 15, "b", ScalarStyle::DoubleQuoted),
                    map(1, 20, vec![])
                ),
                (s(1, 24, "c"), seq(1, 27, vec![])),
            ]
        )
    );
    assert_eq!(
        fast_doc("- {key: 10.0.0.1/32, value: 1}\n"),
        seq(
            1,
            1,
            vec![map(
                1,
                3,
                vec![
                    (s(1, 4, "key"), s(1, 9, "10.0.0.1/32")),
                    (s(1, 22, "value"), s(1, 29, "1")),
                ]
            )]
        )
    );
}

#[test]
fn columns_count_characters() {
    assert_eq!(
        fast_doc("é: ü\nk: [日本, x] # ç\n- ".trim_end_matches("\n- ")),
        map(
            1,
            1,
            vec![
                (s(1, 1, "é"), s(1, 4, "ü")),
                (s(2, 1, "k"), seq(2, 4, vec![s(2, 5, "日本"), s(2, 9, "x")])),
            ]
        )
    );
    assert_eq!(
        fast_doc("k:\n- # ç\n"),
        map(1, 1, vec![(s(1, 1, "k"), seq(2, 6, vec![s(2, 6, "")]))])
    );
}

#[test]
fn scalar_styles_and_escapes() {
    let tree = fast_doc(concat!(
        "- plain words\n",
        "- 'it''s'\n",
        "- 'no escape'\n",
        r#"- "a\tb\u00e9\x41\U0001F600\N\_\L\P\0\/\\\" \e\a\b\v\f\r\n""#,
        "\n",
    ));
    let texts: Vec<(&str, ScalarStyle)> = tree
        .as_sequence()
        .unwrap_or_default()
        .iter()
        .filter_map(Node::as_scalar)
        .map(|s| (&*s.text, s.style))
        .collect();
    assert_eq!(texts.len(), 4, "{tree:?}");
    assert_eq!(texts[0], ("plain words", ScalarStyle::Plain));
    assert_eq!(texts[1], ("it's", ScalarStyle::SingleQuoted));
    assert_eq!(texts[2], ("no escape", ScalarStyle::SingleQuoted));
    assert_eq!(
        texts[3],
        (
            "a\tbéA😀\u{85}\u{a0}\u{2028}\u{2029}\0/\\\" \x1b\x07\x08\x0b\x0c\r\n",
            ScalarStyle::DoubleQuoted
        )
    );
}

#[test]
fn unknown_escape_is_a_syntax_error() {
    let e = error(r#"a: "\q""#);
    assert!(
        matches!(e, YamlError::Syntax { mark, .. } if mark == Mark::new(1, 4)),
        "{e:?}"
    );
}

#[test]
fn scalars_without_escapes_borrow_the_source() {
    let src = "a: plain\nb: 'single'\nc: \"double\"\nd: \"esc\\n\"\ne: 'it''s'\n";
    let check = |tree: &Node<'_>| {
        let borrowed: Vec<bool> = tree
            .as_mapping()
            .unwrap_or_default()
            .iter()
            .flat_map(|(k, v)| [k, v])
            .filter_map(Node::as_scalar)
            .map(|s| matches!(s.text, Cow::Borrowed(_)))
            .collect();
        assert_eq!(
            borrowed,
            [true, true, true, true, true, true, true, false, true, false]
        );
    };
    check(&fast_doc(src));
    // The full path borrows too where the text is verbatim in the source.
    let full = full::parse(src).ok().flatten();
    check(full.as_ref().unwrap_or(&s(0, 0, "")));
}

#[test]
fn empty_documents() {
    for src in [
        "",
        "\n",
        "# c\n",
        "  # c\n\n",
        "---\n",
        "--- # c\n",
        "---",
        "# a\n---\n# b\n",
    ] {
        assert!(fast_accepts(src), "{src:?}");
        assert_eq!(both(src), Ok(None), "{src:?}");
    }
    // The full path agrees on what the fast path leaves to it.
    for src in ["...\n", "%YAML 1.2\n---\n", "--- \n...\n"] {
        assert_eq!(both(src), Ok(None), "{src:?}");
    }
    // An explicit null is a document.
    assert_eq!(both("~"), Ok(Some(s(1, 1, "~"))));
    assert_eq!(
        both("''"),
        Ok(Some(styled(1, 1, "", ScalarStyle::SingleQuoted)))
    );
}

#[test]
fn comments_and_hashes() {
    assert_eq!(
        fast_doc("# head\na: 1 # c\n# full\n   # indented\nb: 'x' # c\nc: x#y\nd: \"#\"\n"),
        map(
            2,
            1,
            vec![
                (s(2, 1, "a"), s(2, 4, "1")),
                (s(5, 1, "b"), styled(5, 4, "x", ScalarStyle::SingleQuoted)),
                (s(6, 1, "c"), s(6, 4, "x#y")),
                (s(7, 1, "d"), styled(7, 4, "#", ScalarStyle::DoubleQuoted)),
            ]
        )
    );
}

#[test]
fn colons_inside_scalars() {
    assert_eq!(
        fast_doc("v6: 2001:db8::/32\nmac: aa:bb:cc:dd:ee:ff\nlo: ::1\nurl: http://x:80/y\n"),
        map(
            1,
            1,
            vec![
                (s(1, 1, "v6"), s(1, 5, "2001:db8::/32")),
                (s(2, 1, "mac"), s(2, 6, "aa:bb:cc:dd:ee:ff")),
                (s(3, 1, "lo"), s(3, 5, "::1")),
                (s(4, 1, "url"), s(4, 6, "http://x:80/y")),
            ]
        )
    );
}

#[test]
fn document_start_and_root_scalars() {
    assert_eq!(
        fast_doc("---\na: b\n"),
        map(2, 1, vec![(s(2, 1, "a"), s(2, 4, "b"))])
    );
    assert_eq!(fast_doc("hello world\n"), s(1, 1, "hello world"));
    assert_eq!(
        fast_doc("  'x'  # c\n"),
        styled(1, 3, "x", ScalarStyle::SingleQuoted)
    );
    assert_eq!(
        fast_doc("  a: 1\n  b: 2"),
        map(
            1,
            3,
            vec![(s(1, 3, "a"), s(1, 6, "1")), (s(2, 3, "b"), s(2, 6, "2")),]
        )
    );
}

#[test]
fn full_path_features() {
    // Block scalars, multi-line scalars: saphyr's marks (a block scalar starts at its content).
    assert_eq!(
        doc("a: |\n  x\n  y\nb: >-\n  p\n  q\nc: 'multi\n  line'\nd: plain\n  cont\n"),
        map(
            1,
            1,
            vec![
                (s(1, 1, "a"), styled(2, 3, "x\ny\n", ScalarStyle::Literal)),
                (s(4, 1, "b"), styled(5, 3, "p q", ScalarStyle::Folded)),
                (
                    s(7, 1, "c"),
                    styled(7, 4, "multi line", ScalarStyle::SingleQuoted)
                ),
                (s(9, 1, "d"), s(9, 4, "plain cont")),
            ]
        )
    );
}

#[test]
fn aliases_copy_the_anchored_node() {
    let tree = doc("a: &x {k: v}\nb: *x\nc: &y 1\nd: [*y, *y]\n");
    let a = tree.get("a").cloned();
    assert_eq!(a, Some(map(1, 4, vec![(s(1, 8, "k"), s(1, 11, "v"))])));
    assert_eq!(tree.get("b").cloned(), a);
    assert_eq!(
        tree.get("d").cloned(),
        Some(seq(4, 4, vec![s(3, 4, "1"), s(3, 4, "1")]))
    );
}

#[test]
fn str_and_non_specific_tags_force_strings() {
    let tree = doc(
        "- !!str 10\n- ! true\n- !!str\n- ! [a]\n- !<tag:yaml.org,2002:str> 1.5\n- !!str 'q'\n",
    );
    let items = tree.as_sequence().unwrap_or_default();
    assert_eq!(items.len(), 6);
    assert_eq!(items[0].as_str(), Some("10"));
    assert_eq!(items[1].as_str(), Some("true"));
    assert_eq!(items[2].as_str(), Some(""));
    assert_eq!(items[3], seq(4, 3, vec![s(4, 6, "a")]));
    assert_eq!(items[4].as_str(), Some("1.5"));
    assert_eq!(
        items[5].as_scalar().map(|s| s.style),
        Some(ScalarStyle::SingleQuoted)
    );
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn syntax_errors_carry_saphyrs_message_without_position() {
    assert_eq!(
        error("a: b: c"),
        YamlError::Syntax {
            mark: Mark::new(1, 5),
            message: "mapping values are not allowed in this context".into(),
        }
    );
    let e = error("- a\nb: c\n");
    assert_eq!(e.mark(), Mark::new(2, 1));
    assert_eq!(
        e.to_string(),
        "while parsing a block collection, did not find expected '-' indicator"
    );
    // A trailing error after a complete document is still an error.
    assert!(matches!(error("a: 1\n]"), YamlError::Syntax { .. }));
}

#[test]
fn duplicate_keys() {
    let dup = |key: &str, mark: Mark, first: Mark| YamlError::DuplicateKey {
        key: key.into(),
        mark,
        first,
    };
    // The fast path reports it itself.
    let src = "a: 1\nb: 2\na: 3\n";
    assert_eq!(
        fast::parse(src),
        Ok(Err(dup("a", Mark::new(3, 1), Mark::new(1, 1))))
    );
    assert_eq!(error(src), dup("a", Mark::new(3, 1), Mark::new(1, 1)));
    // Keys compare by text, whatever the style.
    assert_eq!(
        error("a: 1\n\"a\": 2\n"),
        dup("a", Mark::new(2, 1), Mark::new(1, 1))
    );
    assert_eq!(
        error("{a: 1, 'a': 2}"),
        dup("a", Mark::new(1, 8), Mark::new(1, 2))
    );
    // The first duplicate in document order wins, nested or not.
    assert_eq!(
        error("a: {b: 1, b: 2}\na: 3\n"),
        dup("b", Mark::new(1, 11), Mark::new(1, 5))
    );
    assert_eq!(
        error("a: 1\na:\n  b: 1\n  b: 2\n"),
        dup("a", Mark::new(2, 1), Mark::new(1, 1))
    );
    // The full path (here because of the alias) finds the same.
    assert_eq!(
        error("x: &x 1\na: 1\na: *x\n"),
        dup("a", Mark::new(3, 1), Mark::new(2, 1))
    );
    // Big mappings hash their keys.
    let mut big: String = (0..40).map(|i| format!("k{i}: {i}\n")).collect();
    big.push_str("k17: again\n");
    assert_eq!(error(&big), dup("k17", Mark::new(41, 1), Mark::new(18, 1)));
    assert_eq!(
        error(&format!("z: *z\n{big}").replace("z: *z", "z: &z 0")),
        dup("k17", Mark::new(42, 1), Mark::new(19, 1))
    );
    assert_eq!(
        dup("a", Mark::new(3, 1), Mark::new(1, 1)).to_string(),
        "duplicate key \"a\" (first defined at 1:1)"
    );
}

#[test]
fn nesting_limit() {
    let flow = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(both(&flow(MAX_DEPTH)).is_ok());
    assert!(fast_accepts(&flow(MAX_DEPTH)));
    assert_eq!(
        error(&flow(MAX_DEPTH + 1)),
        YamlError::TooDeep {
            mark: Mark::new(1, 65),
            limit: 64
        }
    );
    let block =
        |n: usize| -> String { (0..n).map(|i| format!("{}a:\n", "  ".repeat(i))).collect() };
    assert!(both(&block(MAX_DEPTH)).is_ok());
    assert!(fast_accepts(&block(MAX_DEPTH)));
    assert_eq!(
        error(&block(MAX_DEPTH + 1)),
        YamlError::TooDeep {
            mark: Mark::new(65, 129),
            limit: 64
        }
    );
    // Through an alias: a 60-level anchor copied 5 levels deep would make 66.
    let deep = format!("a: &x {}\nb: [[[[[*x]]]]]\nc: [[*x]]\n", flow(60));
    assert_eq!(
        error(&deep),
        YamlError::TooDeep {
            mark: Mark::new(2, 9),
            limit: 64
        }
    );
}

#[test]
fn no_stack_overflow_on_huge_nesting() {
    for src in [
        "[".repeat(100_000),
        "{a: ".repeat(100_000),
        "- ".repeat(100_000),
        format!("a:\n  b: {}", "[".repeat(100_000)),
        (0..100_000)
            .map(|i| format!("{}- \n", " ".repeat(i % 1000)))
            .collect(),
    ] {
        let e = parse(&src).expect_err("too deep");
        assert!(
            matches!(e, YamlError::TooDeep { .. } | YamlError::Syntax { .. }),
            "{e:?}"
        );
    }
    // saphyr looks ahead over unclosed brackets (one may start a key) and stops at 255 levels.
    assert_eq!(
        parse(&"[".repeat(100_000)),
        Err(YamlError::Syntax {
            mark: Mark::new(1, 256),
            message: "recursion limit exceeded".into()
        })
    );
    assert_eq!(
        parse(&format!("{}{}", "[".repeat(200), "]".repeat(200))),
        Err(YamlError::TooDeep {
            mark: Mark::new(1, 65),
            limit: 64
        })
    );
}

#[test]
fn billion_laughs_hits_the_budget_quickly() {
    let mut src = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    for pair in names.windows(2) {
        let refs = vec![format!("*{}", pair[0]); 9].join(", ");
        src.push_str(&format!("{}: &{} [{refs}]\n", pair[1], pair[1]));
    }
    let start = std::time::Instant::now();
    let e = parse(&src).expect_err("budget");
    assert!(
        matches!(e, YamlError::AliasBudget { limit, .. } if limit == 1_000_000),
        "{e:?}"
    );
    assert_eq!(both(&src), Err(e));
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
    // Below the budget, aliases are fine.
    let small: String = src.lines().take(4).map(|l| format!("{l}\n")).collect();
    assert!(parse(&small).is_ok());
}

#[test]
fn recursive_alias() {
    assert_eq!(
        error("a: &a [b, *a]"),
        YamlError::RecursiveAlias {
            mark: Mark::new(1, 11)
        }
    );
}

#[test]
fn multiple_documents() {
    assert_eq!(
        error("a: 1\n---\nb: 2\n"),
        YamlError::MultipleDocuments {
            mark: Mark::new(2, 1)
        }
    );
    assert_eq!(
        error("a\n...\nb\n"),
        YamlError::MultipleDocuments {
            mark: Mark::new(3, 1)
        }
    );
    assert_eq!(
        error("---\n---\n"),
        YamlError::MultipleDocuments {
            mark: Mark::new(2, 1)
        }
    );
    // A document end marker alone is fine.
    assert_eq!(both("a\n...\n"), Ok(Some(s(1, 1, "a"))));
}

#[test]
fn unsupported_tags() {
    let tag = |tag: &str, line, col| YamlError::UnsupportedTag {
        tag: tag.into(),
        mark: Mark::new(line, col),
    };
    assert_eq!(error("a: !!int 3"), tag("!!int", 1, 4));
    assert_eq!(error("a:\n- !foo x"), tag("!foo", 2, 3));
    assert_eq!(
        error("- !<tag:example.com,2000:x> y"),
        tag("!<tag:example.com,2000:x>", 1, 3)
    );
    assert_eq!(error("!!str [a]"), tag("!!str", 1, 1));
    assert_eq!(error("!!map {}"), tag("!!map", 1, 1));
    assert_eq!(
        error("%TAG !e! tag:e.com,2000:\n---\n!e!x y"),
        tag("!<tag:e.com,2000:x>", 3, 1)
    );
}

#[test]
fn collection_keys() {
    let complex = |line, col| YamlError::ComplexKey {
        mark: Mark::new(line, col),
    };
    assert_eq!(error("[a]: b"), complex(1, 1));
    assert_eq!(error("{a: 1}: b"), complex(1, 1));
    assert_eq!(error("? [a]\n: b"), complex(1, 3));
    assert_eq!(error("x: {[a]: b}"), complex(1, 5));
    assert_eq!(error("a: &x [1]\n*x : b"), complex(2, 1));
    // Non-string scalar keys are fine here (the schema decides).
    assert_eq!(
        fast_doc("1: a\nnull: b\ntrue: c\n")
            .as_mapping()
            .map(<[_]>::len),
        Some(3)
    );
}

#[test]
fn error_messages_are_lowercase_and_mark_free() {
    let m = Mark::new(7, 9);
    let errors = [
        YamlError::Syntax {
            mark: m,
            message: "x".into(),
        },
        YamlError::TooDeep { mark: m, limit: 64 },
        YamlError::AliasBudget { mark: m, limit: 5 },
        YamlError::RecursiveAlias { mark: m },
        YamlError::DuplicateKey {
            key: "k".into(),
            mark: m,
            first: Mark::new(1, 1),
        },
        YamlError::MultipleDocuments { mark: m },
        YamlError::UnsupportedTag {
            tag: "!x".into(),
            mark: m,
        },
        YamlError::ComplexKey { mark: m },
    ];
    for e in errors {
        assert_eq!(e.mark(), m);
        let text = e.to_string();
        assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
        assert!(!text.contains("7:9"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// jsonschema over the tree
// ---------------------------------------------------------------------------------------------

fn validator(schema: &serde_json::Value) -> jsonschema::Validator<YamlJson> {
    jsonschema::options_for::<YamlJson>()
        .build(schema)
        .unwrap_or_else(|e| panic!("bad schema: {e}"))
}

/// Every error as (instance path, mark of the node it points at, schema keyword).
fn schema_errors(
    validator: &jsonschema::Validator<YamlJson>,
    root: &Node<'_>,
) -> Vec<(String, Option<Mark>, String)> {
    let mut errors: Vec<_> = validator
        .iter_errors(root)
        .map(|e| {
            let path = e.instance_path().as_str().to_owned();
            let mark = node_at(root, &path).map(|n| n.mark);
            let keyword = e
                .schema_path()
                .as_str()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            (path, mark, keyword)
        })
        .collect();
    errors.sort();
    errors
}

#[test]
fn schema_errors_point_at_marks() {
    let schema = serde_json::json!({
        "$defs": {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "entry": {
                "type": "object",
                "required": ["key"],
                "properties": {"key": {"type": "string", "pattern": "^[0-9./]+$"}, "value": {}},
                "additionalProperties": false
            }
        },
        "type": "object",
        "required": ["version", "functions"],
        "additionalProperties": false,
        "properties": {
            "version": {"enum": [1, 2]},
            "functions": {"type": "array", "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "hook": {"enum": ["xdp", "tc"]},
                    "port": {"$ref": "#/$defs/port"},
                    "program": {"oneOf": [
                        {"type": "object", "required": ["builtin"],
                         "properties": {"builtin": {"type": "string"}}, "additionalProperties": false},
                        {"type": "object", "required": ["path"],
                         "properties": {"path": {"type": "string"}}, "additionalProperties": false}
                    ]},
                    "entries": {"type": "array", "items": {"$ref": "#/$defs/entry"}}
                }
            }}
        }
    });
    let validator = validator(&schema);

    let good = doc(concat!(
        "version: 1\n",
        "functions:\n",
        "  - name: edge\n",
        "    hook: xdp\n",
        "    port: 0x50\n",
        "    program: {builtin: blocklist}\n",
        "    entries:\n",
        "      - {key: 10.0.0.1/32, value: 1}\n",
        "      - key: \"10.0.0.2/32\"\n",
    ));
    assert_eq!(schema_errors(&validator, &good), vec![]);

    let bad = doc(concat!(
        "version: 3\n",
        "functions:\n",
        "  - name: 7\n",
        "    hook: bpf\n",
        "    port: 70000\n",
        "    program: {builtin: x, path: y}\n",
        "    entries:\n",
        "      - key: 10.0.0.1/32\n",
        "      - key: abc\n",
        "      - value: 1\n",
        "        extra: x\n",
        "extra: 1\n",
    ));
    let at = |line, col| Some(Mark::new(line, col));
    assert_eq!(
        schema_errors(&validator, &bad),
        vec![
            ("".into(), at(1, 1), "additionalProperties".into()),
            (
                "/functions/0/entries/1/key".into(),
                at(9, 14),
                "pattern".into()
            ),
            (
                "/functions/0/entries/2".into(),
                at(10, 9),
                "additionalProperties".into()
            ),
            (
                "/functions/0/entries/2".into(),
                at(10, 9),
                "required".into()
            ),
            ("/functions/0/hook".into(), at(4, 11), "enum".into()),
            ("/functions/0/name".into(), at(3, 11), "type".into()),
            ("/functions/0/port".into(), at(5, 11), "maximum".into()),
            ("/functions/0/program".into(), at(6, 14), "oneOf".into()),
            ("/version".into(), at(1, 10), "enum".into()),
        ]
    );
}

#[test]
fn json_typing_of_scalars() {
    let v = |schema: serde_json::Value| validator(&schema);
    let tree = doc(concat!(
        "null: ~\n",
        "bool: True\n",
        "int: 0x10\n",
        "huge: 99999999999999999999\n",
        "neg: -5\n",
        "float: 1.5e3\n",
        "whole: 2.0\n",
        "nan: .nan\n",
        "inf: -.inf\n",
        "str: '10'\n",
        "ip: 10.0.0.1\n",
    ));
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "null": {"type": "null"},
            "bool": {"const": true},
            "int": {"type": "integer", "enum": [16, 17], "multipleOf": 4},
            "huge": {"type": "integer", "minimum": 1e19, "maximum": 1e20},
            "neg": {"type": "integer", "exclusiveMaximum": 0},
            "float": {"type": "number", "enum": [1500], "maximum": 1500.0},
            "whole": {"type": "integer"},
            "nan": {"type": "string", "const": ".nan"},
            "inf": {"type": "string"},
            "str": {"type": "string", "maxLength": 2},
            "ip": {"type": "string", "minLength": 8}
        }
    });
    assert_eq!(schema_errors(&v(schema), &tree), vec![]);
    let numbers = serde_json::json!({"additionalProperties": {"type": "number"}});
    let errors: Vec<String> = schema_errors(&v(numbers), &tree)
        .into_iter()
        .map(|(path, _, _)| path)
        .collect();
    assert_eq!(errors, ["/bool", "/inf", "/ip", "/nan", "/null", "/str"]);
    // Whole-tree comparisons go through `to_value`.
    let whole = serde_json::json!({"properties": {"m": {"const": {"a": [1, "x", null]}}}});
    assert_eq!(
        schema_errors(&v(whole.clone()), &doc("m: {a: [1, x, ~]}")),
        vec![]
    );
    assert_eq!(
        schema_errors(&v(whole), &doc("m: {a: [1, 'x', 2]}")).len(),
        1
    );
    assert_eq!(
        to_value(&doc(
            "a: [1, -2, 1.5, x, '1', ~, .inf, 99999999999999999999]"
        )),
        serde_json::json!({"a": [1, -2, 1.5, "x", "1", null, ".inf", 1e20]})
    );
    // Property names are validated as strings.
    let names = serde_json::json!({"propertyNames": {"pattern": "^[a-z]+$"}});
    assert_eq!(
        schema_errors(&v(names.clone()), &doc("ok: 1\nalso: 2")),
        vec![]
    );
    assert_eq!(schema_errors(&v(names), &doc("ok: 1\nNot: 2")).len(), 1);
    let unique = serde_json::json!({"uniqueItems": true});
    assert_eq!(schema_errors(&v(unique.clone()), &doc("[1, 2, x]")), vec![]);
    assert_eq!(schema_errors(&v(unique), &doc("[1, 0x1]")).len(), 1);
}

#[test]
fn node_at_follows_json_pointers() {
    let tree = doc("a/b: 1\nm~n: [x, {1: y}]\n\"\": empty\n");
    let text = |pointer: &str| {
        node_at(&tree, pointer)
            .and_then(Node::as_scalar)
            .map(|s| s.text.clone())
    };
    assert_eq!(text("/a~1b").as_deref(), Some("1"));
    assert_eq!(text("/m~0n/0").as_deref(), Some("x"));
    assert_eq!(text("/m~0n/1/1").as_deref(), Some("y"));
    assert_eq!(text("/").as_deref(), Some("empty"));
    assert_eq!(node_at(&tree, "").map(|n| n.mark), Some(Mark::new(1, 1)));
    assert!(node_at(&tree, "/m~0n/2").is_none());
    assert!(node_at(&tree, "/m~0n/01").is_none());
    assert!(node_at(&tree, "/nope").is_none());
    assert!(node_at(&tree, "a").is_none());
}

// ---------------------------------------------------------------------------------------------
// Random YAML-ish documents
// ---------------------------------------------------------------------------------------------

/// Draws choices from a byte string, so proptest shrinks documents by shrinking the bytes
/// (shorter and smaller means simpler). Exhausted choices are 0: the simplest option.
struct Choices<'c> {
    bytes: &'c [u8],
    next: usize,
}

impl Choices<'_> {
    fn pick(&mut self, n: usize) -> usize {
        let b = self.bytes.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        usize::from(b) % n
    }

    /// True with probability about `percent`%.
    fn chance(&mut self, percent: usize) -> bool {
        self.pick(100) < percent
    }

    fn from<'s>(&mut self, options: &[&'s str]) -> &'s str {
        options[self.pick(options.len())]
    }
}

/// Plain scalars the fast path should take.
const PLAIN: &[&str] = &[
    "a",
    "b",
    "key",
    "value",
    "10.0.0.1/32",
    "2001:db8::/32",
    "aa:bb:cc:dd:ee:ff",
    "::1",
    "-1",
    "+1",
    "0x1F",
    "0o17",
    "1.5",
    "1e3",
    ".inf",
    "~",
    "null",
    "true",
    "a b",
    "a:b",
    "a#b",
    "é",
    "日本語",
    "-a",
    "a-",
    "a -b",
    "a - b",
    "http://x/y?z=1&w",
    "<<",
    "=",
    "$x",
    "a  b",
    "a\u{7f}",
    "\u{85}x",
    "x\u{2028}y",
    "--",
    "a'b",
    "a\"b",
    "\u{a0}x",
    "x\u{3000}",
    "\u{2003} y",
];

/// Plain-looking text that is something else, or invalid, or odd in flow context.
const PLAIN_ODD: &[&str] = &[
    ":a", "x, y", "a]", "a}", "{a", "%x", "@x", "`x", "a:", "a: b", "a #b", "- a", "-", "---",
    "...", "?", "? a", "?a", "&a", "*a", "!x", "!!str", "! a", "|", ">", "a\t", "-]", "a -,",
];

/// Quoted scalars the fast path should take.
const QUOTED: &[&str] = &[
    "'q'",
    "'it''s'",
    "''",
    "\"\"",
    "\"d\"",
    "\"a\\nb\"",
    "\"\\u00e9\\x41\\U0001F600\"",
    "\"a\\\"b\"",
    "\"a'b\"",
    "'a\"b'",
    "\"tab\\tx\"",
    "\"a # b\"",
    "'a: b'",
    "\"x\\/y\"",
    "\"\\0\"",
    "\"é\\_\\N\\L\\P\"",
    "\"\\e\\a\\b\\v\\f\\r\\ \"",
    "\"a\\\\\"",
    "'x' #c",
    "'[a, b]'",
];

/// Broken or out-of-subset quoted scalars.
const QUOTED_ODD: &[&str] = &[
    "\"\\q\"",
    "\"\\ud800\"",
    "\"\\U00110000\"",
    "\"\\x4\"",
    "'unterminated",
    "\"unterminated",
    "'a''",
    "\"\\\"",
    "\"a\"b",
    "'a'b",
    "\"a\" b",
    "\"a\tb\"",
    "\"a\\\tb\"",
];

const FRAGMENTS: &[&str] = &[
    "a", "b", " ", " ", ":", "#", "-", ",", "[", "]", "{", "}", "'", "\"", "\\", "!", "&", "*",
    "|", ">", "?", "%", "@", "`", ".", "é", "\t", "0", "x", "\u{feff}", "\r", "\0",
];

const TRAILING: &[&str] = &["", "", "", "", " ", "  ", " # c", " #c é", " # \t tab"];

const TRAILING_ODD: &[&str] = &["#c", "\t", " \t", "\r", " x", " :"];

/// Builds a random document from choices.
struct Generator<'c> {
    c: Choices<'c>,
    out: String,
    depth: usize,
    /// Percent chance of picking an odd variant at each choice point.
    odd: usize,
}

impl Generator<'_> {
    fn odd(&mut self) -> bool {
        self.c.chance(self.odd)
    }

    /// Picks from `clean`, or from `odd` with the document's oddness.
    fn either<'s>(&mut self, clean: &[&'s str], odd: &[&'s str]) -> &'s str {
        if self.odd() {
            self.c.from(odd)
        } else {
            self.c.from(clean)
        }
    }

    fn scalar(&mut self) {
        if self.odd() && self.c.chance(30) {
            for _ in 0..1 + self.c.pick(5) {
                let s = self.c.from(FRAGMENTS);
                self.out.push_str(s);
            }
        } else if self.c.chance(70) {
            let s = self.either(PLAIN, PLAIN_ODD);
            self.out.push_str(s);
        } else {
            let s = self.either(QUOTED, QUOTED_ODD);
            self.out.push_str(s);
        }
    }

    fn key(&mut self) {
        if self.odd() && self.c.chance(20) {
            self.flow();
        } else if self.c.chance(1) {
            // Around the fast path's key length limit (saphyr's is 1024 characters).
            let len = 995 + self.c.pick(40);
            let quoted = self.c.chance(50);
            if quoted {
                self.out.push('"');
            }
            self.out.push_str(&"k".repeat(len));
            if quoted {
                self.out.push('"');
            }
        } else {
            self.scalar();
        }
    }

    fn flow(&mut self) {
        self.depth += 1;
        let space = if self.odd() { "" } else { " " };
        if self.c.chance(50) {
            self.out.push('[');
            let n = self.c.pick(4);
            for i in 0..n {
                if i > 0 {
                    self.out.push(',');
                    self.out.push_str(space);
                }
                self.flow_node();
                if self.odd() && self.c.chance(20) {
                    self.out.push_str(": ");
                    self.flow_node();
                }
            }
            if n > 0 && self.odd() && self.c.chance(20) {
                self.out.push(',');
            }
            self.out.push(']');
        } else {
            self.out.push('{');
            let n = self.c.pick(4);
            for i in 0..n {
                if i > 0 {
                    self.out.push(',');
                    self.out.push_str(space);
                }
                self.scalar();
                let colon = self.either(&[": "], &["", ":", " : ", ":  ", ": "]);
                self.out.push_str(colon);
                if !self.odd() {
                    self.flow_node();
                }
            }
            if n > 0 && self.odd() && self.c.chance(20) {
                self.out.push(',');
            }
            self.out.push('}');
        }
        self.depth -= 1;
    }

    fn flow_node(&mut self) {
        if self.depth < 4 && self.c.chance(20) {
            self.flow();
        } else {
            self.scalar();
        }
    }

    fn value(&mut self) {
        if self.c.chance(20) {
            self.flow();
        } else {
            self.scalar();
        }
    }

    fn trailing(&mut self) {
        let t = self.either(TRAILING, TRAILING_ODD);
        self.out.push_str(t);
        self.out.push('\n');
        if self.c.chance(10) {
            let blank = self
                .c
                .from(&["\n", "  \n", "# comment\n", "   # indented comment\n"]);
            self.out.push_str(blank);
        }
    }

    /// Indentation for a line that should be at `indent`, sometimes off by one.
    fn indent(&mut self, indent: usize) {
        let actual = if self.odd() && self.c.chance(30) {
            match self.c.pick(3) {
                0 => indent + 1,
                1 => indent.saturating_sub(1),
                _ => indent + 2,
            }
        } else {
            indent
        };
        for _ in 0..actual {
            self.out.push(' ');
        }
    }

    /// A block collection whose lines are at `indent`; the first line's indentation has been
    /// written already if `started`.
    fn block(&mut self, indent: usize, started: bool) {
        self.depth += 1;
        let entries = 1 + self.c.pick(4);
        let sequence = self.c.chance(40);
        for i in 0..entries {
            if i > 0 || !started {
                self.indent(indent);
            }
            if sequence {
                self.out.push('-');
                self.entry(indent);
            } else {
                self.key();
                self.out.push(':');
                self.entry(indent);
            }
        }
        self.depth -= 1;
    }

    /// What follows `key:` or `-` in a block collection at `indent`.
    fn entry(&mut self, indent: usize) {
        let nest = self.depth < 5;
        match self.c.pick(12) {
            0 => self.trailing(),
            1 | 2 if nest => {
                self.trailing();
                let step = self.c.from(&["2", "2", "2", "1", "4", "0"]);
                let child = indent + step.parse::<usize>().unwrap_or(2);
                if step == "0" {
                    // `key:\n- a`, a sequence at its key's indentation.
                    self.indent(indent);
                    self.out.push('-');
                    self.entry(indent);
                } else {
                    self.indent(child);
                    self.block(child, true);
                }
            }
            3 if nest => {
                // Compact: `- key: value` or `- - a`.
                let gap = 1 + self.c.pick(2);
                for _ in 0..gap {
                    self.out.push(' ');
                }
                self.block(indent + 1 + gap, true);
            }
            _ => {
                let gap = self.either(&[" ", " ", " ", "  "], &["", "\t", " \t"]);
                self.out.push_str(gap);
                self.value();
                self.trailing();
            }
        }
    }

    fn document(mut self) -> String {
        self.odd = [0, 0, 1, 3, 10, 30][self.c.pick(6)];
        if self.c.chance(15) {
            let s = self.c.from(&["# head\n", "\n", "  \n", "#\n"]);
            self.out.push_str(s);
        }
        if self.c.chance(15) {
            let s = self.either(
                &["---\n", "--- # c\n", "---  \n", "---\n\n"],
                &["--- a\n", "---\t\n", "...\n", "%YAML 1.2\n---\n"],
            );
            self.out.push_str(s);
        }
        match self.c.pick(10) {
            0 => {
                self.value();
                self.trailing();
            }
            1 => {}
            _ => {
                let indent = self.c.from(&["", "", "", " ", "  "]);
                self.out.push_str(indent);
                self.block(indent.len(), true);
            }
        }
        if self.odd() && self.c.chance(20) {
            let s = self.c.from(&["---\n", "...\n", "--- b\n", "... # x\n"]);
            self.out.push_str(s);
        }
        if self.odd() && self.c.chance(30) {
            // Chop the end off, or remove the final line break.
            let cut = self.c.pick(self.out.len().max(1));
            let cut = (0..=cut)
                .rev()
                .find(|&i| self.out.is_char_boundary(i))
                .unwrap_or(0);
            self.out.truncate(cut);
        }
        self.out
    }
}

fn generate(bytes: &[u8]) -> String {
    Generator {
        c: Choices { bytes, next: 0 },
        out: String::new(),
        depth: 0,
        odd: 0,
    }
    .document()
}

/// Applies a few small edits (insert, delete or replace a character, or re-indent a line) to a
/// document, to probe the inputs right around valid ones.
fn mutate(src: &str, bytes: &[u8]) -> String {
    let mut c = Choices { bytes, next: 0 };
    let mut out: Vec<char> = src.chars().collect();
    for _ in 0..1 + c.pick(3) {
        let at = c.pick(out.len() + 1);
        match c.pick(4) {
            0 => {
                let piece = c.from(FRAGMENTS);
                for (i, ch) in piece.chars().enumerate() {
                    out.insert(at + i, ch);
                }
            }
            1 if at < out.len() => {
                out.remove(at);
            }
            2 if at < out.len() => {
                out[at] = c
                    .from(&[" ", ":", "-", "#", "'", "\"", "\n", "a", ",", "]"])
                    .chars()
                    .next()
                    .unwrap_or(' ');
            }
            _ => {
                // Re-indent the line holding `at` by one space either way.
                let line = out[..at]
                    .iter()
                    .rposition(|&ch| ch == '\n')
                    .map_or(0, |i| i + 1);
                if c.chance(50) {
                    out.insert(line, ' ');
                } else if out.get(line) == Some(&' ') {
                    out.remove(line);
                }
            }
        }
    }
    out.into_iter().collect()
}

/// A deterministic stream of choice bytes for the non-proptest sweeps.
fn lcg_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

#[test]
fn differential_sweep() {
    let mut accepted = 0;
    let total = 20_000;
    for seed in 0..total {
        let bytes = lcg_bytes(seed, 400);
        let src = generate(&bytes);
        let _ = both(&src);
        if fast_accepts(&src) {
            accepted += 1;
        }
        let _ = both(&mutate(&src, &bytes[300..]));
    }
    // The sweep only proves something if the fast path takes a good share of the inputs.
    assert!(
        accepted * 5 > total,
        "fast path accepted only {accepted}/{total}"
    );
    eprintln!("fast path accepted {accepted}/{total} generated documents");
}

/// A long differential run: `YAML_SOAK=2000000 cargo test --release -- --ignored soak`.
#[test]
#[ignore]
fn differential_soak() {
    let total: u64 = std::env::var("YAML_SOAK")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let mut accepted = 0u64;
    for seed in 0..total {
        let bytes = lcg_bytes(seed ^ 0x5eed_0000_0000, 600);
        let src = generate(&bytes);
        let _ = both(&src);
        accepted += u64::from(fast_accepts(&src));
        let mutant = mutate(&src, &bytes[300..]);
        let _ = both(&mutant);
    }
    eprintln!("fast path accepted {accepted}/{total}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn fast_path_agrees_with_full_path(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let src = generate(&bytes);
        let _ = both(&src);
        let _ = parse(&src);
    }

    #[test]
    fn fast_path_agrees_near_valid_documents(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        edits in proptest::collection::vec(any::<u8>(), 0..12),
    ) {
        let src = mutate(&generate(&bytes), &edits);
        let _ = both(&src);
        let _ = parse(&src);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let src = String::from_utf8_lossy(&bytes);
        let _ = both(&src);
        let _ = parse(&src);
    }

    #[test]
    fn yaml_alphabet_never_panics(
        pieces in proptest::collection::vec(proptest::sample::select(FRAGMENTS.to_vec()), 0..60),
        breaks in proptest::collection::vec(any::<u8>(), 0..60),
    ) {
        let mut src = String::new();
        for (i, piece) in pieces.iter().enumerate() {
            src.push_str(piece);
            if breaks.get(i).is_some_and(|b| b % 5 == 0) {
                src.push('\n');
            }
        }
        let _ = both(&src);
        let _ = parse(&src);
    }
}

/// Shows what the generator makes and which valid documents the fast path leaves to the full
/// one: `--ignored --nocapture generator_stats`.
#[test]
#[ignore]
fn generator_stats() {
    let (mut ok, mut fast_ok, mut valid_rejected) = (0, 0, Vec::new());
    for seed in 0..20_000 {
        let src = generate(&lcg_bytes(seed, 300));
        let full = full::parse(&src);
        let fast = fast_accepts(&src);
        if full.is_ok() {
            ok += 1;
        }
        if fast {
            fast_ok += 1;
        } else if full.is_ok() {
            valid_rejected.push(src);
        }
    }
    eprintln!(
        "full ok {ok}, fast accepted {fast_ok}, valid but rejected {}",
        valid_rejected.len()
    );
    for src in valid_rejected.iter().take(60) {
        eprintln!("-----\n{src}");
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmark
// ---------------------------------------------------------------------------------------------

/// The benchmark config: one map with `entries` entries, in block (`- key: ..\n  value: ..`)
/// or flow (`- {key: .., value: ..}`) form.
fn big_config(entries: usize, flow: bool) -> String {
    let mut src = String::with_capacity(entries * 60);
    src.push_str(
        "version: 1\nfunctions:\n  - name: edge\n    interface: eth0\n    hook: xdp\n    \
         program: {builtin: blocklist}\n    maps:\n      deny_v4:\n        entries:\n",
    );
    for i in 0..entries {
        let (a, b, c) = ((i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
        if flow {
            src.push_str(&format!(
                "          - {{key: 10.{a}.{b}.{c}/32, value: 1}}\n"
            ));
        } else {
            src.push_str(&format!(
                "          - key: 10.{a}.{b}.{c}/32\n            value: 1\n"
            ));
        }
    }
    src
}

fn entries_of<'n>(root: &'n Node<'n>) -> &'n [Node<'n>] {
    let functions = root.get("functions").and_then(Node::as_sequence);
    functions
        .and_then(|f| f.first())
        .and_then(|f| f.get("maps"))
        .and_then(|m| m.get("deny_v4"))
        .and_then(|m| m.get("entries"))
        .and_then(Node::as_sequence)
        .unwrap_or_default()
}

/// CPU time this thread has run, in seconds (Linux; 0 elsewhere). The benchmarks report it
/// next to wall time because wall time is noisy on a shared machine.
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

/// Resident memory of the process in MB (Linux; 0 elsewhere).
fn resident_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / 1e6)
}

fn time<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let (wall, cpu) = (std::time::Instant::now(), thread_cpu());
    let result = f();
    eprintln!(
        "{label}: {:.3} s wall, {:.3} s cpu",
        wall.elapsed().as_secs_f64(),
        thread_cpu() - cpu
    );
    result
}

/// `cargo test --release -- --ignored --nocapture bench_million`
#[test]
#[ignore]
fn bench_million() {
    const ENTRIES: usize = 1_000_000;
    for flow in [false, true] {
        let src = big_config(ENTRIES, flow);
        let form = if flow { "flow" } else { "block" };
        eprintln!("{form} form, {:.1} MB", src.len() as f64 / 1e6);
        let rss = resident_mb();
        let fast = time("  fast path", || fast::parse(&src));
        let Ok(Ok(Some(fast))) = fast else {
            panic!("fast path refused the benchmark input");
        };
        eprintln!("  tree: +{:.0} MB resident", resident_mb() - rss);
        assert_eq!(entries_of(&fast).len(), ENTRIES);
        time("  drop tree", || drop(fast));
        let full = time("  full path", || full::parse(&src));
        let full = full.ok().flatten();
        assert!(full.is_some());
        drop(full);
        let root = time("  parse()", || parse(&src)).ok().flatten();
        let Some(root) = root else {
            panic!("no document");
        };
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "version": {"const": 1},
                "functions": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"maps": {"type": "object", "additionalProperties": {
                        "type": "object",
                        "properties": {"entries": {"type": "array", "items": {
                            "type": "object",
                            "required": ["key"],
                            "properties": {"key": {}, "value": {}},
                            "additionalProperties": false
                        }}}
                    }}}
                }}
            }
        });
        let validator = jsonschema::options_for::<YamlJson>()
            .build(&schema)
            .unwrap_or_else(|e| panic!("schema: {e}"));
        let valid = time("  validate", || validator.is_valid(&root));
        assert!(valid);
        let errors = time("  iter_errors", || validator.iter_errors(&root).count());
        assert_eq!(errors, 0);
    }
}

/// The fast path alone, for profiling: `--ignored --nocapture bench_fast_only`.
#[test]
#[ignore]
fn bench_fast_only() {
    let src = big_config(1_000_000, false);
    let runs = std::env::var("YAML_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    for _ in 0..runs {
        let tree = time("fast path", || fast::parse(&src));
        assert!(matches!(tree, Ok(Ok(Some(_)))));
    }
}
