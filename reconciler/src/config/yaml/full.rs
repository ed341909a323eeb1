//! The full path: any YAML `saphyr-parser` accepts, built into a [`Node`] tree from its events.
//!
//! On top of saphyr it enforces kfd's rules: a single document, nesting at most
//! [`MAX_DEPTH`] deep, unique scalar keys, no collection keys, only the `!!str` and `!` tags,
//! and a budget on what anchors and aliases may materialise.
//!
//! # Alias budget
//!
//! See the module documentation of [`super`]: copies made for aliases, and the copy kept of
//! each anchored node so later aliases can copy it, count against one budget. Anchored nodes
//! are only kept when the source contains a `*` at all (no `*`, no alias).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::RandomState;

use saphyr_parser::{Event, Marker, Parser, ScanError, Span, Tag};

use super::error::{MAX_DEPTH, YamlError};
use super::node::{Kind, Mark, Node, ScalarStyle};
use super::tree::{self, KeySet};

/// The alias budget's floor, in nodes.
const ALIAS_BUDGET_FLOOR: usize = 1_000_000;
/// Refuses a `%YAML` directive of another major version, which saphyr accepts silently.
/// Directives only come before the document's `---`, after blank and comment lines.
fn check_version(src: &str) -> Result<(), YamlError> {
    for (i, line) in src.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix("%YAML") else {
            if line.starts_with('%') {
                continue; // %TAG and reserved directives
            }
            return Ok(());
        };
        let version = rest.split('#').next().unwrap_or("").trim();
        if version.split('.').next() != Some("1") {
            return Err(YamlError::UnsupportedVersion {
                version: version.to_owned(),
                mark: Mark::new(u32::try_from(i + 1).unwrap_or(u32::MAX), 1),
            });
        }
    }
    Ok(())
}

/// Nodes per parser event the alias budget allows beyond the floor.
const ALIAS_BUDGET_PER_EVENT: usize = 4;

/// The core-schema string tag, resolved.
const STR_TAG: &str = "tag:yaml.org,2002:str";

/// Parses `src`, a single YAML document; `None` if it is empty (no document, or an empty one).
pub(super) fn parse(src: &str) -> Result<Option<Node<'_>>, YamlError> {
    check_version(src)?;
    let mut builder = Builder {
        src,
        end: end_of(src),
        offsets: Offsets {
            src,
            ascii: src.is_ascii(),
            chars: 0,
            bytes: 0,
        },
        items: Vec::new(),
        pairs: Vec::new(),
        frames: Vec::new(),
        anchors: HashMap::new(),
        keep_anchors: src.as_bytes().contains(&b'*'),
        events: 0,
        materialised: 0,
        hasher: RandomState::new(),
        root: None,
    };
    builder.run()?;
    Ok(match builder.root {
        // An empty document (`---` alone) has an empty plain scalar for its root.
        Some(Node {
            kind: Kind::Scalar(ref s),
            ..
        }) if s.style == ScalarStyle::Plain && s.text.is_empty() => None,
        root => root,
    })
}

/// An open collection.
struct Frame<'a> {
    mapping: bool,
    mark: Mark,
    /// Where its children start on their scratch stack.
    start: usize,
    /// saphyr's anchor id, 0 for none.
    anchor: usize,
    keys: KeySet,
    /// A mapping's key waiting for its value.
    key: Option<Node<'a>>,
}

/// A finished anchored node, kept for the aliases that may copy it.
struct Anchored<'a> {
    node: Node<'a>,
    /// Its node count.
    nodes: usize,
    /// How many collection levels it adds where it is copied.
    height: usize,
}

struct Builder<'a> {
    src: &'a str,
    /// Where the file ends (see [`mark_of`]).
    end: Mark,
    offsets: Offsets<'a>,
    items: Vec<Node<'a>>,
    pairs: Vec<(Node<'a>, Node<'a>)>,
    frames: Vec<Frame<'a>>,
    anchors: HashMap<usize, Anchored<'a>>,
    keep_anchors: bool,
    events: usize,
    /// Nodes materialised for anchors and aliases, checked against the budget.
    materialised: usize,
    hasher: RandomState,
    root: Option<Node<'a>>,
}

/// The last position a mark may name: just past the end of the last line. Lines end as
/// YAML ends them: "\n", "\r\n" or a lone "\r".
fn end_of(src: &str) -> Mark {
    let (mut line, mut col) = (1u32, 1u32);
    let mut after_cr = false;
    for c in src.chars() {
        match c {
            '\n' if after_cr => {}
            '\n' | '\r' => (line, col) = (line.saturating_add(1), 1),
            _ => col = col.saturating_add(1),
        }
        after_cr = c == '\r';
    }
    Mark::new(line, col)
}

/// A saphyr marker (1-based line, 0-based column in characters) as a mark. At the end of
/// a file with no final newline, saphyr marks errors and empty nodes on the line after
/// the last one, which no editor can go to: those point at `end` instead.
fn mark_of(marker: Marker, end: Mark) -> Mark {
    let mark = Mark::new(
        u32::try_from(marker.line().max(1)).unwrap_or(u32::MAX),
        u32::try_from(marker.col().saturating_add(1)).unwrap_or(u32::MAX),
    );
    if mark.line > end.line { end } else { mark }
}

fn syntax(error: &ScanError, end: Mark) -> YamlError {
    YamlError::Syntax {
        mark: mark_of(*error.marker(), end),
        // `info` is the message alone; saphyr's `Display` appends the position.
        message: error.info().to_owned(),
    }
}

fn style_of(style: saphyr_parser::ScalarStyle) -> ScalarStyle {
    match style {
        saphyr_parser::ScalarStyle::Plain => ScalarStyle::Plain,
        saphyr_parser::ScalarStyle::SingleQuoted => ScalarStyle::SingleQuoted,
        saphyr_parser::ScalarStyle::DoubleQuoted => ScalarStyle::DoubleQuoted,
        saphyr_parser::ScalarStyle::Literal => ScalarStyle::Literal,
        saphyr_parser::ScalarStyle::Folded => ScalarStyle::Folded,
    }
}

/// How a tag is written back: `!!str`, `!local`, or verbatim.
fn tag_text(tag: &Tag) -> String {
    match tag.handle.as_str() {
        "tag:yaml.org,2002:" => format!("!!{}", tag.suffix),
        "!" => format!("!{}", tag.suffix),
        handle => format!("!<{handle}{}>", tag.suffix),
    }
}

/// Checks a node's tag. `Ok(true)`: the scalar is forced to be a string.
fn check_tag(tag: Option<&Tag>, mark: Mark, scalar: bool) -> Result<bool, YamlError> {
    let Some(tag) = tag else {
        return Ok(false);
    };
    // `!` alone: the non-specific tag, "not resolved by the core schema".
    let non_specific = tag.handle.is_empty() && tag.suffix == "!";
    if non_specific {
        return Ok(scalar);
    }
    // `!!str`, `!<tag:yaml.org,2002:str>`, or a `%TAG` handle expanding to it.
    let is_str = STR_TAG.strip_prefix(tag.handle.as_str()) == Some(tag.suffix.as_str());
    if is_str && scalar {
        return Ok(true);
    }
    Err(YamlError::UnsupportedTag {
        tag: tag_text(tag),
        mark,
    })
}

/// Node count and added nesting levels of a subtree. Recursion is bounded by [`MAX_DEPTH`].
fn measure(node: &Node<'_>) -> (usize, usize) {
    match &node.kind {
        Kind::Scalar(_) => (1, 0),
        Kind::Sequence(items) => items.iter().fold((1, 1), |(n, h), item| {
            let (cn, ch) = measure(item);
            (n + cn, h.max(ch + 1))
        }),
        Kind::Mapping(pairs) => pairs.iter().fold((1, 1), |(n, h), (k, v)| {
            let (kn, kh) = measure(k);
            let (vn, vh) = measure(v);
            (n + kn + vn, h.max(kh.max(vh) + 1))
        }),
    }
}

impl<'a> Builder<'a> {
    fn run(&mut self) -> Result<(), YamlError> {
        let mut parser = Parser::new_from_str(self.src);
        let mut documents = 0usize;
        // The whole stream is read, so trailing syntax errors are reported too.
        while let Some(next) = parser.next_event() {
            let (event, span) = next.map_err(|e| syntax(&e, self.end))?;
            self.events += 1;
            let mark = mark_of(span.start, self.end);
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    if documents > 0 {
                        return Err(YamlError::MultipleDocuments { mark });
                    }
                    documents += 1;
                }
                Event::Alias(id) => self.alias(id, mark)?,
                Event::Scalar(text, style, anchor, tag) => {
                    self.scalar(text, style, anchor, tag.as_deref(), span)?;
                }
                Event::SequenceStart(anchor, tag) => {
                    self.open(false, anchor, tag.as_deref(), mark)?;
                }
                Event::MappingStart(anchor, tag) => {
                    self.open(true, anchor, tag.as_deref(), mark)?
                }
                Event::SequenceEnd | Event::MappingEnd => self.close()?,
            }
        }
        Ok(())
    }

    fn budget(&self) -> usize {
        ALIAS_BUDGET_FLOOR.max(self.events.saturating_mul(ALIAS_BUDGET_PER_EVENT))
    }

    /// Whether the next node pushed is a key of the innermost (mapping) collection.
    fn expecting_key(&self) -> bool {
        self.frames
            .last()
            .is_some_and(|f| f.mapping && f.key.is_none())
    }

    fn scalar(
        &mut self,
        text: Cow<'a, str>,
        style: saphyr_parser::ScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        span: Span,
    ) -> Result<(), YamlError> {
        let mark = mark_of(span.start, self.end);
        let forced = check_tag(tag, mark, true)?;
        let mut style = style_of(style);
        let text = self.borrow(text, span.start, style);
        if forced && style == ScalarStyle::Plain {
            // `!!str 10` is the string "10": typed like a quoted scalar.
            style = ScalarStyle::DoubleQuoted;
        }
        self.finish(tree::scalar(mark, text, style), anchor, mark)
    }

    /// saphyr hands out owned scalar text; where the text appears verbatim in the source at
    /// the scalar's start, borrow it instead (any equal slice is as good as a copy).
    fn borrow(&mut self, text: Cow<'a, str>, start: Marker, style: ScalarStyle) -> Cow<'a, str> {
        let skip = match style {
            ScalarStyle::Plain => 0,
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => 1,
            ScalarStyle::Literal | ScalarStyle::Folded => return text,
        };
        let Some(at) = self.offsets.byte(start.index()) else {
            return text;
        };
        let from = at + skip;
        match self.src.get(from..from + text.len()) {
            Some(slice) if slice == text => Cow::Borrowed(slice),
            _ => text,
        }
    }

    fn open(
        &mut self,
        mapping: bool,
        anchor: usize,
        tag: Option<&Tag>,
        mark: Mark,
    ) -> Result<(), YamlError> {
        check_tag(tag, mark, false)?;
        if self.expecting_key() {
            return Err(YamlError::ComplexKey { mark });
        }
        if self.frames.len() >= MAX_DEPTH {
            return Err(YamlError::TooDeep {
                mark,
                limit: MAX_DEPTH,
            });
        }
        self.frames.push(Frame {
            mapping,
            mark,
            start: if mapping {
                self.pairs.len()
            } else {
                self.items.len()
            },
            anchor,
            keys: KeySet::default(),
            key: None,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), YamlError> {
        let Some(frame) = self.frames.pop() else {
            return Ok(());
        };
        let kind = if frame.mapping {
            Kind::Mapping(tree::take(&mut self.pairs, frame.start))
        } else {
            Kind::Sequence(tree::take(&mut self.items, frame.start))
        };
        let node = Node {
            mark: frame.mark,
            kind,
        };
        self.finish(node, frame.anchor, frame.mark)
    }

    fn alias(&mut self, id: usize, mark: Mark) -> Result<(), YamlError> {
        // saphyr resolves names to ids itself (an unknown name is its syntax error); an id we
        // have not kept belongs to a node still open around this alias.
        let Some(anchored) = self.anchors.get(&id) else {
            return Err(YamlError::RecursiveAlias { mark });
        };
        if self.frames.len() + anchored.height > MAX_DEPTH {
            return Err(YamlError::TooDeep {
                mark,
                limit: MAX_DEPTH,
            });
        }
        let limit = self.budget();
        if self.materialised.saturating_add(anchored.nodes) > limit {
            return Err(YamlError::AliasBudget { mark, limit });
        }
        self.materialised += anchored.nodes;
        let node = anchored.node.clone();
        self.push(node, mark)
    }

    /// A node is complete: keep it for aliases if anchored, then attach it to its parent.
    fn finish(&mut self, node: Node<'a>, anchor: usize, site: Mark) -> Result<(), YamlError> {
        if anchor != 0 && self.keep_anchors {
            let (nodes, height) = measure(&node);
            let limit = self.budget();
            if self.materialised.saturating_add(nodes) > limit {
                return Err(YamlError::AliasBudget { mark: site, limit });
            }
            self.materialised += nodes;
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    nodes,
                    height,
                },
            );
        }
        self.push(node, site)
    }

    /// Attaches a finished node to the innermost open collection (or makes it the root).
    /// `site` is where it appears in the source: its own mark, or its alias's.
    fn push(&mut self, node: Node<'a>, site: Mark) -> Result<(), YamlError> {
        let Some(frame) = self.frames.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        if !frame.mapping {
            self.items.push(node);
            return Ok(());
        }
        if let Some(key) = frame.key.take() {
            self.pairs.push((key, node));
            return Ok(());
        }
        if !matches!(node.kind, Kind::Scalar(_)) {
            return Err(YamlError::ComplexKey { mark: site });
        }
        let entries = self.pairs.get(frame.start..).unwrap_or_default();
        if let Some(first) = frame.keys.check(entries, &node, &self.hasher) {
            return Err(YamlError::DuplicateKey {
                key: tree::key_text(&node).unwrap_or_default().to_owned(),
                mark: site,
                first,
            });
        }
        frame.key = Some(node);
        Ok(())
    }
}

/// Character index → byte offset, for a cursor that mostly moves forward.
struct Offsets<'a> {
    src: &'a str,
    ascii: bool,
    chars: usize,
    bytes: usize,
}

impl Offsets<'_> {
    fn byte(&mut self, char_index: usize) -> Option<usize> {
        if self.ascii {
            return (char_index <= self.src.len()).then_some(char_index);
        }
        while self.chars < char_index {
            let c = self.src.get(self.bytes..)?.chars().next()?;
            self.bytes += c.len_utf8();
            self.chars += 1;
        }
        while self.chars > char_index {
            let c = self.src.get(..self.bytes)?.chars().next_back()?;
            self.bytes -= c.len_utf8();
            self.chars -= 1;
        }
        Some(self.bytes)
    }
}
