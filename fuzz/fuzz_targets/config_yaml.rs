//! Structure-aware config fuzzing: `arbitrary` builds a document shaped
//! like a kfd config (known keys, builtins, maps, CIDRs, MACs, ints at the
//! edges of their types, wrong types, unknown keys), rendered as YAML in a
//! random mix of block and flow styles. Besides the common checks, the
//! renderer always writes well-formed YAML, so kfd must never report a YAML
//! syntax error for it: that would be a parser bug.
#![no_main]

mod common;

use arbitrary::Arbitrary;
use reconciler::config::ErrorKind;
use reconciler::config::yaml::YamlError;

#[derive(Debug, Arbitrary)]
struct Doc {
    version: Option<Scalar>,
    chains: Vec<Chain>,
    functions: Vec<Function>,
    extra: Option<(Key, Value)>,
    flow_top: bool,
}

#[derive(Debug, Arbitrary)]
struct Chain {
    interface: Word,
    hook: Word,
    xdp_mode: Option<Word>,
    tc: Option<(Word, Scalar)>,
    flow: bool,
}

#[derive(Debug, Arbitrary)]
struct Function {
    name: Word,
    interface: Word,
    interfaces: Option<Vec<Word>>,
    netns: Option<Word>,
    hook: Word,
    priority: Option<Scalar>,
    program: Program,
    proceed_on: Option<Vec<Word>>,
    globals: Vec<(Key, Value)>,
    maps: Vec<(Key, MapCfg)>,
    extra: Option<(Key, Value)>,
    flow: bool,
}

#[derive(Debug, Arbitrary)]
enum Program {
    Builtin(Word),
    Object(Word, Option<Word>),
    Both,
    Empty,
    Weird(Value),
}

#[derive(Debug, Arbitrary)]
struct MapCfg {
    update: Option<Word>,
    threshold: Option<Scalar>,
    entries: Vec<Entry>,
    flow: bool,
}

#[derive(Debug, Arbitrary)]
struct Entry {
    key: Value,
    value: Value,
    drop_value: bool,
}

/// A word kfd knows, or something else.
#[derive(Debug, Arbitrary)]
enum Word {
    Known(u8),
    Text(String),
}

const WORDS: &[&str] = &[
    "xdp",
    "tc-ingress",
    "tc-egress",
    "blocklist",
    "blocklist-swap",
    "ratelimit",
    "counter",
    "mark",
    "eth0",
    "eth1",
    "lo",
    "blue",
    "/run/netns/blue",
    "edge-bl",
    "a",
    "pass",
    "drop",
    "aborted",
    "tx",
    "redirect",
    "ok",
    "shot",
    "pipe",
    "auto",
    "native",
    "generic",
    "entries",
    "swap",
    "tcx",
    "clsact",
    "first",
    "last",
    "deny_v4",
    "deny_v6",
    "allow_v4",
    "allow_v6",
    "rl_config",
    "rl_buckets",
    "counts",
    "rules",
    "kf_progs",
    "kf_slot_idx",
    "rate_pps",
    "burst",
    "prefixlen",
    "addr",
    "mark",
    "dscp",
    "proto",
    "src4",
    "dst6",
    "sport_min",
    "/nonexistent/x.o",
    "/etc/passwd",
    "/dev/null",
    "xdp_mode",
    "version",
    "Edge_BL",
];

#[derive(Debug, Arbitrary)]
enum Key {
    Known(u8),
    Text(String),
    Int(i64),
}

#[derive(Debug, Arbitrary)]
enum Scalar {
    Int(i64),
    Edge(u8),
    Float(f64),
    Bool(bool),
    Null,
    Word(Word),
    Cidr4([u8; 4], u8),
    Cidr6([u16; 8], u8),
    Mac([u8; 6]),
    Hex(Vec<u8>),
    Text(String),
}

/// Integers at the edges of C types.
const EDGES: &[&str] = &[
    "0",
    "1",
    "-1",
    "127",
    "128",
    "-128",
    "-129",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "0x10",
    "0o17",
    "1e3",
    ".inf",
    "-.inf",
    ".nan",
    "0x",
    "1_000",
    "+1",
    "007",
];

#[derive(Debug, Arbitrary)]
enum Value {
    Scalar(Scalar),
    Seq(Vec<Value>, bool),
    Map(Vec<(Key, Value)>, bool),
}

fn word(w: &Word) -> String {
    match w {
        Word::Known(i) => scalar_text(WORDS[*i as usize % WORDS.len()]),
        Word::Text(s) => quote(s),
    }
}

fn key(k: &Key) -> String {
    match k {
        Key::Known(i) => scalar_text(WORDS[*i as usize % WORDS.len()]),
        // YAML limits implicit keys to 1,024 characters as written: 128 characters
        // stay under it even when each is escaped (`\u0000`).
        Key::Text(s) => quote(&s.chars().take(128).collect::<String>()),
        Key::Int(i) => i.to_string(),
    }
}

/// A plain scalar when it is a simple token, else double-quoted.
fn scalar_text(s: &str) -> String {
    let simple = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
    if simple { s.to_owned() } else { quote(s) }
}

/// A double-quoted YAML scalar: escapes everything YAML does not allow raw.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' => out.push(c),
            c if (c as u32) >= 0x10000 => out.push(c),
            c => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn scalar(s: &Scalar) -> String {
    match s {
        Scalar::Int(i) => i.to_string(),
        Scalar::Edge(i) => EDGES[*i as usize % EDGES.len()].to_owned(),
        Scalar::Float(f) if f.is_finite() => format!("{f:?}"),
        Scalar::Float(_) => ".nan".into(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Null => "null".into(),
        Scalar::Word(w) => word(w),
        Scalar::Cidr4(a, p) => format!("{}.{}.{}.{}/{}", a[0], a[1], a[2], a[3], p % 40),
        Scalar::Cidr6(a, p) => quote(&format!(
            "{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}/{}",
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            a[6],
            a[7],
            p % 140
        )),
        Scalar::Mac(m) => quote(&format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )),
        Scalar::Hex(b) => {
            let hex: String = b.iter().take(40).map(|b| format!("{b:02x}")).collect();
            quote(&format!("0x{hex}"))
        }
        Scalar::Text(s) => quote(s),
    }
}

/// A node of the tree being rendered.
enum Node {
    Leaf(String),
    Seq(Vec<Node>, bool),
    Map(Vec<(String, Node)>, bool),
}

const MAX_DEPTH: usize = 12;

fn value(v: &Value, depth: usize) -> Node {
    if depth > MAX_DEPTH {
        return Node::Leaf("null".into());
    }
    match v {
        Value::Scalar(s) => Node::Leaf(scalar(s)),
        Value::Seq(items, flow) => Node::Seq(
            items.iter().take(8).map(|i| value(i, depth + 1)).collect(),
            *flow,
        ),
        Value::Map(members, flow) => Node::Map(
            members
                .iter()
                .take(8)
                .map(|(k, v)| (key(k), value(v, depth + 1)))
                .collect(),
            *flow,
        ),
    }
}

fn map(members: Vec<(&str, Node)>, flow: bool) -> Node {
    Node::Map(
        members
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        flow,
    )
}

fn leaf(s: String) -> Node {
    Node::Leaf(s)
}

fn doc(d: &Doc) -> Node {
    let mut top = Vec::new();
    if let Some(v) = &d.version {
        top.push(("version", leaf(scalar(v))));
    } else {
        top.push(("version", leaf("1".into())));
    }
    if !d.chains.is_empty() {
        let chains = d
            .chains
            .iter()
            .take(4)
            .map(|c| {
                let mut m = vec![
                    ("interface", leaf(word(&c.interface))),
                    ("hook", leaf(word(&c.hook))),
                ];
                if let Some(x) = &c.xdp_mode {
                    m.push(("xdp_mode", leaf(word(x))));
                }
                if let Some((a, p)) = &c.tc {
                    m.push(("tc_attach", leaf(word(a))));
                    m.push(("tc_priority", leaf(scalar(p))));
                }
                map(m, c.flow)
            })
            .collect();
        top.push(("chains", Node::Seq(chains, false)));
    }
    let functions = d.functions.iter().take(6).map(function).collect();
    top.push(("functions", Node::Seq(functions, false)));
    let mut node = map(top, d.flow_top);
    if let (Some((k, v)), Node::Map(members, _)) = (&d.extra, &mut node) {
        members.push((key(k), value(v, 1)));
    }
    node
}

fn function(f: &Function) -> Node {
    let mut m = vec![("name", leaf(word(&f.name)))];
    match &f.interfaces {
        Some(list) => m.push((
            "interfaces",
            Node::Seq(list.iter().take(4).map(|w| leaf(word(w))).collect(), true),
        )),
        None => m.push(("interface", leaf(word(&f.interface)))),
    }
    if let Some(n) = &f.netns {
        m.push(("netns", leaf(word(n))));
    }
    m.push(("hook", leaf(word(&f.hook))));
    if let Some(p) = &f.priority {
        m.push(("priority", leaf(scalar(p))));
    }
    let program = match &f.program {
        Program::Builtin(w) => map(vec![("builtin", leaf(word(w)))], f.flow),
        Program::Object(w, sha) => {
            let mut p = vec![("object", leaf(word(w)))];
            if let Some(s) = sha {
                p.push(("sha256", leaf(word(s))));
            }
            map(p, f.flow)
        }
        Program::Both => map(
            vec![
                ("builtin", leaf("blocklist".into())),
                ("object", leaf("/nonexistent/x.o".into())),
            ],
            f.flow,
        ),
        Program::Empty => map(Vec::new(), true),
        Program::Weird(v) => value(v, 2),
    };
    m.push(("program", program));
    if let Some(list) = &f.proceed_on {
        m.push((
            "proceed_on",
            Node::Seq(list.iter().take(6).map(|w| leaf(word(w))).collect(), true),
        ));
    }
    if !f.globals.is_empty() {
        m.push((
            "globals",
            Node::Map(
                f.globals
                    .iter()
                    .take(4)
                    .map(|(k, v)| (key(k), value(v, 3)))
                    .collect(),
                false,
            ),
        ));
    }
    if !f.maps.is_empty() {
        let maps = f
            .maps
            .iter()
            .take(4)
            .map(|(k, cfg)| {
                let mut c = Vec::new();
                if let Some(u) = &cfg.update {
                    c.push(("update", leaf(word(u))));
                }
                if let Some(t) = &cfg.threshold {
                    c.push(("swap_threshold", leaf(scalar(t))));
                }
                let entries = cfg
                    .entries
                    .iter()
                    .take(64)
                    .map(|e| {
                        let mut kv = vec![("key", value(&e.key, 5))];
                        if !e.drop_value {
                            kv.push(("value", value(&e.value, 5)));
                        }
                        map(kv, cfg.flow)
                    })
                    .collect();
                c.push(("entries", Node::Seq(entries, false)));
                (key(k), map(c, false))
            })
            .collect();
        m.push(("maps", Node::Map(maps, false)));
    }
    let mut node = map(m, f.flow);
    if let (Some((k, v)), Node::Map(members, _)) = (&f.extra, &mut node) {
        members.push((key(k), value(v, 2)));
    }
    node
}

/// Flow style: one line.
fn flow(n: &Node, out: &mut String) {
    match n {
        Node::Leaf(s) => out.push_str(s),
        Node::Seq(items, _) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                flow(it, out);
            }
            out.push(']');
        }
        Node::Map(members, _) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push_str(": ");
                flow(v, out);
            }
            out.push('}');
        }
    }
}

/// Whether `n` is written inline after `key:` / `- `.
fn inline(n: &Node) -> bool {
    match n {
        Node::Leaf(_) => true,
        Node::Seq(items, f) => *f || items.is_empty(),
        Node::Map(members, f) => *f || members.is_empty(),
    }
}

/// Block style: lines at `indent`.
fn block(n: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match n {
        Node::Map(members, _) => {
            for (k, v) in members {
                out.push_str(&pad);
                out.push_str(k);
                out.push(':');
                if inline(v) {
                    out.push(' ');
                    flow(v, out);
                    out.push('\n');
                } else {
                    out.push('\n');
                    block(v, indent + 2, out);
                }
            }
        }
        Node::Seq(items, _) => {
            for it in items {
                out.push_str(&pad);
                out.push('-');
                if inline(it) {
                    out.push(' ');
                    flow(it, out);
                    out.push('\n');
                } else {
                    // The item's first line goes after "- ", the rest under it.
                    let mut inner = String::new();
                    block(it, indent + 2, &mut inner);
                    out.push(' ');
                    out.push_str(&inner[indent + 2..]);
                }
            }
        }
        Node::Leaf(_) => {
            out.push_str(&pad);
            flow(n, out);
            out.push('\n');
        }
    }
}

libfuzzer_sys::fuzz_target!(|d: Doc| {
    let tree = doc(&d);
    let mut text = String::new();
    if inline(&tree) {
        flow(&tree, &mut text);
        text.push('\n');
    } else {
        block(&tree, 0, &mut text);
    }
    if let Err(errors) = common::check(text.as_bytes()) {
        for e in &errors {
            if let ErrorKind::Yaml(YamlError::Syntax { .. }) = &e.kind {
                panic!("the renderer wrote valid YAML, but: {e}\n{text}");
            }
        }
    }
});
