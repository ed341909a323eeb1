//! The fast path: a hand-written parser for the subset of YAML that config files are made of.
//!
//! It exists for speed only. For every input it accepts, the result (tree, marks, scalar texts
//! and styles, errors) is exactly what the full path ([`super::full`]) produces; anything
//! outside the subset, and anything that might be a syntax error, makes it give up with
//! [`Unsupported`] so the caller re-parses with the full path. When in doubt, it gives up.
//!
//! # The subset
//!
//! Lines end in `\n`; indentation is spaces. Accepted:
//! - blank lines and comments, an optional `---` line before the content;
//! - block mappings whose keys are single-line plain or quoted scalars followed directly by
//!   `:` (no space before it), at most [`MAX_KEY_BYTES`] long;
//! - block sequences, including a sequence at the same indentation as its parent key
//!   (`key:\n- a`), compact nesting on the entry's line (`- key: value`, `- - a`), and empty
//!   entries and values;
//! - values on the next, more indented line only when they are collections;
//! - single-line flow collections whose mappings are written `{k: v, ...}` with a space after
//!   each `:`, and whose sequences hold no `k: v` pairs; no trailing commas, no empty entries;
//! - single-line plain scalars (in flow context not starting with `:`), single-line
//!   single-quoted scalars, and single-line double-quoted scalars with any escape but `\<TAB>`.
//!
//! Everything else gives up: tabs and carriage returns outside comments, NUL and byte order
//! marks anywhere, anchors, aliases, tags, block scalars, directives, document markers other
//! than the first `---`, `?` keys, collection keys, multi-line scalars and flow collections,
//! scalars on the line after their key, indentation that does not line up, nesting beyond
//! [`MAX_DEPTH`], and every syntax error.
//!
//! # Marks
//!
//! The marks reproduce what `saphyr-parser` reports: collections start at their first key,
//! `-`, `[` or `{`, except a sequence at its parent key's indentation, which starts where its
//! first entry's content starts (after `-`, blanks and a comment, i.e. possibly at the end of
//! the line). An empty value starts at its `:`, an empty entry where that entry's content
//! would (the same rule). Quoted scalars start at their opening quote.

use std::borrow::Cow;
use std::hash::RandomState;

use super::error::{MAX_DEPTH, YamlError};
use super::node::{Kind, Mark, Node, ScalarStyle};
use super::tree::{self, KeySet};

/// The fast path cannot parse this input; use the full one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unsupported;

type Fast<T> = Result<T, Unsupported>;

/// Longest block key, `:` excluded, the fast path takes. YAML (and saphyr) limit implicit keys
/// to 1024 characters; bytes are at least as many as characters, so this is on the safe side.
const MAX_KEY_BYTES: usize = 1000;

/// Parses `src` if it is inside the subset. The inner result is the parse result proper: the
/// tree, or the first duplicate key (the only error the fast path reports itself).
pub(super) fn parse(src: &str) -> Result<Result<Option<Node<'_>>, YamlError>, Unsupported> {
    let mut parser = Parser {
        src,
        b: src.as_bytes(),
        pos: 0,
        line: 1,
        line_start: 0,
        indent: 0,
        line_non_ascii: false,
        items: Vec::new(),
        pairs: Vec::new(),
        duplicate: None,
        hasher: RandomState::new(),
    };
    let root = parser.document()?;
    Ok(match parser.duplicate {
        Some(error) => Err(error),
        None => Ok(root),
    })
}

struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    /// Byte offset of the next byte to read.
    pos: usize,
    /// 1-based line of `pos`.
    line: u32,
    /// Byte offset where `pos`'s line starts.
    line_start: usize,
    /// Indentation of the current content line, valid once `next_line` has found one.
    indent: usize,
    /// Whether a non-ASCII byte has been read on the current line (else columns are bytes).
    line_non_ascii: bool,
    /// Scratch stack of finished sequence items (see [`tree`]).
    items: Vec<Node<'a>>,
    /// Scratch stack of finished mapping entries.
    pairs: Vec<(Node<'a>, Node<'a>)>,
    /// The first duplicate key, reported once the whole document has parsed.
    duplicate: Option<YamlError>,
    hasher: RandomState,
}

fn is_flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

/// Bytes a plain scalar simply continues over: printable ASCII that ends nothing. The rest
/// (blanks, breaks, `:`, `#`, flow indicators and `-` in flow context, control and non-ASCII
/// bytes) is looked at one by one.
const fn plain_continues(flow: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut c = b'!';
    while c < 0x80 {
        let special = matches!(c, b':' | b'#')
            || (flow && matches!(c, b',' | b'[' | b']' | b'{' | b'}' | b'-'));
        table[c as usize] = !special;
        c += 1;
    }
    table
}

static PLAIN_BLOCK: [bool; 256] = plain_continues(false);
static PLAIN_FLOW: [bool; 256] = plain_continues(true);

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn at(&self, pos: usize) -> Option<u8> {
        self.b.get(pos).copied()
    }

    /// Whether the byte before `pos` is a space.
    fn after_space(&self, pos: usize) -> bool {
        pos.checked_sub(1).and_then(|p| self.at(p)) == Some(b' ')
    }

    fn eof(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn is_bom(&self, pos: usize) -> bool {
        self.b.get(pos..pos + 3) == Some(b"\xEF\xBB\xBF")
    }

    /// The mark of byte offset `pos` on the current line: columns count characters.
    fn mark(&self, pos: usize) -> Mark {
        let chars = if self.line_non_ascii {
            let prefix = self.b.get(self.line_start..pos).unwrap_or_default();
            prefix.iter().filter(|&&c| (c & 0xC0) != 0x80).count()
        } else {
            pos.saturating_sub(self.line_start)
        };
        Mark::new(self.line, u32::try_from(chars + 1).unwrap_or(u32::MAX))
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// At `\n`: moves to the start of the next line.
    fn newline(&mut self) -> Fast<()> {
        self.pos += 1;
        self.line = self.line.checked_add(1).ok_or(Unsupported)?;
        self.line_start = self.pos;
        self.line_non_ascii = false;
        Ok(())
    }

    /// At `#`: skips the comment up to (not including) its line break.
    fn skip_comment(&mut self) -> Fast<()> {
        while let Some(c) = self.peek() {
            match c {
                b'\n' => break,
                // A NUL or a byte order mark ends a comment for saphyr (and then is an error);
                // `\r` is a line break there.
                b'\0' | b'\r' => return Err(Unsupported),
                0xEF if self.is_bom(self.pos) => return Err(Unsupported),
                0x80.. => {
                    self.line_non_ascii = true;
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
        Ok(())
    }

    /// At the start of a line: skips blank and comment lines, stopping at the first content
    /// character (setting `indent`) or at the end of the input.
    fn next_line(&mut self) -> Fast<()> {
        loop {
            let begin = self.pos;
            self.skip_spaces();
            match self.peek() {
                None => return Ok(()),
                Some(b'\n') => self.newline()?,
                Some(b'#') => {
                    self.skip_comment()?;
                    if !self.eof() {
                        self.newline()?;
                    }
                }
                Some(_) => {
                    self.indent = self.pos - begin;
                    return Ok(());
                }
            }
        }
    }

    /// `---` or `...` at the start of a line, followed by a blank or the end: a document marker.
    fn at_document_marker(&self) -> bool {
        self.pos == self.line_start
            && matches!(
                self.b.get(self.pos..self.pos + 3),
                Some(b"---") | Some(b"...")
            )
            && matches!(
                self.at(self.pos + 3),
                None | Some(b' ' | b'\t' | b'\n' | b'\r')
            )
    }

    /// After a node: the rest of its line must be blanks and maybe a comment. Moves to the next
    /// content line.
    fn end_line(&mut self) -> Fast<()> {
        self.end_line_from(self.pos)
    }

    /// [`Self::end_line`] where the node ended at `before`, blanks after it maybe skipped already.
    fn end_line_from(&mut self, before: usize) -> Fast<()> {
        self.skip_spaces();
        match self.peek() {
            None => return Ok(()),
            Some(b'\n') => {}
            // A comment needs a blank before it.
            Some(b'#') if self.pos > before => {
                self.skip_comment()?;
                if self.eof() {
                    return Ok(());
                }
            }
            Some(_) => return Err(Unsupported),
        }
        self.newline()?;
        self.next_line()?;
        if !self.eof() && self.at_document_marker() {
            return Err(Unsupported);
        }
        Ok(())
    }

    /// A block sequence entry indicator: `-` followed by a space, a line break or the end.
    fn at_dash_entry(&self) -> bool {
        self.peek() == Some(b'-') && matches!(self.at(self.pos + 1), None | Some(b' ' | b'\n'))
    }

    /// A mapping value indicator in block context: `:` followed by a space, a line break or the end.
    fn at_value_colon(&self) -> bool {
        self.peek() == Some(b':') && matches!(self.at(self.pos + 1), None | Some(b' ' | b'\n'))
    }

    fn document(&mut self) -> Fast<Option<Node<'a>>> {
        self.next_line()?;
        if self.eof() {
            return Ok(None);
        }
        if self.at_document_marker() {
            if self.b.get(self.pos..self.pos + 3) != Some(b"---") {
                return Err(Unsupported);
            }
            self.pos += 3;
            self.end_line()?;
            if self.eof() {
                return Ok(None);
            }
        }
        let node = self.block_node(self.indent, 0, true)?;
        if !self.eof() {
            return Err(Unsupported);
        }
        Ok(Some(node))
    }

    /// A node whose first character is at the current position, column `col`, with `depth`
    /// collections around it. It is the first thing on its line, or follows `- ` on it.
    /// `lone_ok`: whether a scalar or flow collection that is not a key may stand here.
    fn block_node(&mut self, col: usize, depth: usize, lone_ok: bool) -> Fast<Node<'a>> {
        if self.at_dash_entry() {
            return self.block_sequence(col, depth + 1, false);
        }
        if matches!(self.peek(), Some(b'[' | b'{')) {
            // A flow collection: a complex key if a `:` follows, which `end_line` refuses.
            if !lone_ok {
                return Err(Unsupported);
            }
            let node = self.inline_node(depth)?;
            self.end_line()?;
            return Ok(node);
        }
        let key_start = self.pos;
        let node = self.scalar()?;
        if self.at_value_colon() {
            return self.block_mapping(col, key_start, node, depth + 1);
        }
        if !lone_ok {
            return Err(Unsupported);
        }
        self.end_line()?;
        Ok(node)
    }

    /// A block mapping at column `n` whose first key has been read (the position is at its `:`).
    fn block_mapping(
        &mut self,
        n: usize,
        mut key_start: usize,
        first_key: Node<'a>,
        depth: usize,
    ) -> Fast<Node<'a>> {
        if depth > MAX_DEPTH {
            return Err(Unsupported);
        }
        let mark = first_key.mark;
        let start = self.pairs.len();
        let mut keys = KeySet::default();
        let mut key = first_key;
        loop {
            if self.pos - key_start > MAX_KEY_BYTES {
                return Err(Unsupported);
            }
            self.check_key(start, &mut keys, &key);
            let colon = self.mark(self.pos);
            self.pos += 1;
            let after_colon = self.pos;
            self.skip_spaces();
            let value = if matches!(self.peek(), None | Some(b'\n' | b'#')) {
                self.end_line_from(after_colon)?;
                if self.eof() || self.indent < n {
                    tree::empty(colon)
                } else if self.indent > n {
                    self.block_node(self.indent, depth, false)?
                } else if self.at_dash_entry() {
                    self.block_sequence(n, depth + 1, true)?
                } else {
                    tree::empty(colon)
                }
            } else {
                let value = self.inline_node(depth)?;
                self.end_line()?;
                value
            };
            self.pairs.push((key, value));
            if self.eof() || self.indent < n {
                break;
            }
            if self.indent > n || self.at_dash_entry() || matches!(self.peek(), Some(b'[' | b'{')) {
                return Err(Unsupported);
            }
            key_start = self.pos;
            key = self.scalar()?;
            if !self.at_value_colon() {
                return Err(Unsupported);
            }
        }
        Ok(Node {
            mark,
            kind: Kind::Mapping(tree::take(&mut self.pairs, start)),
        })
    }

    /// A block sequence whose first `-` is at the current position, column `n`.
    /// `indentless`: the sequence is a value at its key's indentation (`key:\n- a`).
    fn block_sequence(&mut self, n: usize, depth: usize, indentless: bool) -> Fast<Node<'a>> {
        if depth > MAX_DEPTH {
            return Err(Unsupported);
        }
        let mut mark = self.mark(self.pos);
        let start = self.items.len();
        let mut first = true;
        loop {
            self.pos += 1;
            self.skip_spaces();
            if self.peek() == Some(b'#') {
                self.skip_comment()?;
            }
            // saphyr places the entry (and an indentless sequence) after the `-`, the blanks
            // and the comment that follow it.
            let entry = self.mark(self.pos);
            if indentless && first {
                mark = entry;
            }
            first = false;
            let value = if matches!(self.peek(), None | Some(b'\n')) {
                self.end_line()?;
                if !self.eof() && self.indent > n {
                    self.block_node(self.indent, depth, false)?
                } else {
                    tree::empty(entry)
                }
            } else {
                let col = self.pos - self.line_start;
                self.block_node(col, depth, true)?
            };
            self.items.push(value);
            if self.eof() || self.indent < n {
                break;
            }
            if self.indent == n && self.at_dash_entry() {
                continue;
            }
            if self.indent == n && indentless {
                break;
            }
            return Err(Unsupported);
        }
        Ok(Node {
            mark,
            kind: Kind::Sequence(tree::take(&mut self.items, start)),
        })
    }

    /// A node on the rest of a line in block context: a scalar or a flow collection.
    fn inline_node(&mut self, depth: usize) -> Fast<Node<'a>> {
        match self.peek() {
            Some(b'[') => self.flow_sequence(depth + 1),
            Some(b'{') => self.flow_mapping(depth + 1),
            _ => self.scalar(),
        }
    }

    /// A scalar in block context.
    fn scalar(&mut self) -> Fast<Node<'a>> {
        match self.peek() {
            Some(b'"') => self.double_quoted(),
            Some(b'\'') => self.single_quoted(),
            _ => self.plain(false),
        }
    }

    /// A single-line plain scalar; `flow`: inside a flow collection.
    fn plain(&mut self, flow: bool) -> Fast<Node<'a>> {
        let start = self.pos;
        let first = self.peek().ok_or(Unsupported)?;
        match first {
            // Indicators may start a plain scalar only before a "safe" character.
            b'-' | b':' => {
                if flow && first == b':' {
                    return Err(Unsupported);
                }
                match self.at(start + 1) {
                    Some(c) if c > b' ' && !is_flow_indicator(c) && c != b'#' => {}
                    _ => return Err(Unsupported),
                }
            }
            b'?' | b'[' | b']' | b'{' | b'}' | b',' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>'
            | b'\'' | b'"' | b'%' | b'@' | b'`' => return Err(Unsupported),
            0..=b' ' => return Err(Unsupported),
            _ => {}
        }
        let continues = if flow { &PLAIN_FLOW } else { &PLAIN_BLOCK };
        let mut end = start;
        let mut i = start;
        loop {
            let run = i;
            while self.at(i).is_some_and(|c| continues[usize::from(c)]) {
                i += 1;
            }
            if i > run {
                end = i;
            }
            let Some(c) = self.at(i) else { break };
            match c {
                b'\n' => break,
                b' ' => i += 1,
                b':' => match self.at(i + 1) {
                    None | Some(b' ' | b'\n') => break,
                    Some(c) if flow && is_flow_indicator(c) => break,
                    Some(c) if c < b' ' => return Err(Unsupported),
                    Some(_) => {
                        i += 1;
                        end = i;
                    }
                },
                // A `#` after a blank starts a comment.
                b'#' if self.after_space(i) => break,
                b',' | b'[' | b']' | b'{' | b'}' if flow => break,
                // saphyr rejects a word starting with `-` and a flow indicator inside flow.
                b'-' if flow
                    && self.after_space(i)
                    && self.at(i + 1).is_some_and(is_flow_indicator) =>
                {
                    return Err(Unsupported);
                }
                0..=0x1F => return Err(Unsupported),
                0xEF if self.is_bom(i) => return Err(Unsupported),
                _ => {
                    if c >= 0x80 {
                        self.line_non_ascii = true;
                    }
                    i += 1;
                    end = i;
                }
            }
        }
        let text = self.src.get(start..end).ok_or(Unsupported)?;
        self.pos = end;
        Ok(tree::scalar(
            self.mark(start),
            Cow::Borrowed(text),
            ScalarStyle::Plain,
        ))
    }

    /// A single-line `'...'` scalar.
    fn single_quoted(&mut self) -> Fast<Node<'a>> {
        let open = self.pos;
        let mut i = open + 1;
        let mut owned: Option<String> = None;
        let mut segment = i;
        loop {
            match self.at(i).ok_or(Unsupported)? {
                b'\'' if self.at(i + 1) == Some(b'\'') => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(self.src.get(segment..=i).ok_or(Unsupported)?);
                    i += 2;
                    segment = i;
                }
                b'\'' => break,
                0..=0x1F => return Err(Unsupported),
                0xEF if self.is_bom(i) => return Err(Unsupported),
                0x80.. => {
                    self.line_non_ascii = true;
                    i += 1;
                }
                _ => i += 1,
            }
        }
        let text = self.finish_quoted(owned, segment, open, i)?;
        self.pos = i + 1;
        Ok(tree::scalar(
            self.mark(open),
            text,
            ScalarStyle::SingleQuoted,
        ))
    }

    /// A single-line `"..."` scalar.
    fn double_quoted(&mut self) -> Fast<Node<'a>> {
        let open = self.pos;
        let mut i = open + 1;
        let mut owned: Option<String> = None;
        let mut segment = i;
        loop {
            match self.at(i).ok_or(Unsupported)? {
                b'"' => break,
                b'\\' => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(self.src.get(segment..i).ok_or(Unsupported)?);
                    let (c, len) = self.escape(i)?;
                    s.push(c);
                    i += len;
                    segment = i;
                }
                0..=0x1F => return Err(Unsupported),
                0xEF if self.is_bom(i) => return Err(Unsupported),
                0x80.. => {
                    self.line_non_ascii = true;
                    i += 1;
                }
                _ => i += 1,
            }
        }
        let text = self.finish_quoted(owned, segment, open, i)?;
        self.pos = i + 1;
        Ok(tree::scalar(
            self.mark(open),
            text,
            ScalarStyle::DoubleQuoted,
        ))
    }

    /// The text of a quoted scalar opened at `open` and closed at `close`: borrowed if nothing
    /// was unescaped, else `owned` plus the last segment.
    fn finish_quoted(
        &self,
        owned: Option<String>,
        segment: usize,
        open: usize,
        close: usize,
    ) -> Fast<Cow<'a, str>> {
        Ok(match owned {
            None => Cow::Borrowed(self.src.get(open + 1..close).ok_or(Unsupported)?),
            Some(mut s) => {
                s.push_str(self.src.get(segment..close).ok_or(Unsupported)?);
                Cow::Owned(s)
            }
        })
    }

    /// The escape sequence whose `\` is at `i`: the character and the bytes it takes.
    /// Exactly the escapes saphyr knows, except `\<TAB>` (tabs are out of the subset).
    fn escape(&self, i: usize) -> Fast<(char, usize)> {
        let c = match self.at(i + 1).ok_or(Unsupported)? {
            b'0' => '\0',
            b'a' => '\x07',
            b'b' => '\x08',
            b't' => '\t',
            b'n' => '\n',
            b'v' => '\x0b',
            b'f' => '\x0c',
            b'r' => '\r',
            b'e' => '\x1b',
            b' ' => ' ',
            b'"' => '"',
            b'/' => '/',
            b'\\' => '\\',
            b'N' => '\u{85}',
            b'_' => '\u{a0}',
            b'L' => '\u{2028}',
            b'P' => '\u{2029}',
            kind @ (b'x' | b'u' | b'U') => {
                let digits = match kind {
                    b'x' => 2,
                    b'u' => 4,
                    _ => 8,
                };
                let hex = self.b.get(i + 2..i + 2 + digits).ok_or(Unsupported)?;
                let mut value = 0u32;
                for &h in hex {
                    let digit = char::from(h).to_digit(16).ok_or(Unsupported)?;
                    value = (value << 4) | digit;
                }
                return Ok((char::from_u32(value).ok_or(Unsupported)?, 2 + digits));
            }
            _ => return Err(Unsupported),
        };
        Ok((c, 2))
    }

    /// A node inside a flow collection.
    fn flow_node(&mut self, depth: usize) -> Fast<Node<'a>> {
        match self.peek() {
            Some(b'[') => self.flow_sequence(depth + 1),
            Some(b'{') => self.flow_mapping(depth + 1),
            Some(b'"') => self.double_quoted(),
            Some(b'\'') => self.single_quoted(),
            _ => self.plain(true),
        }
    }

    /// `[a, b, ...]` on one line.
    fn flow_sequence(&mut self, depth: usize) -> Fast<Node<'a>> {
        if depth > MAX_DEPTH {
            return Err(Unsupported);
        }
        let mark = self.mark(self.pos);
        let start = self.items.len();
        self.pos += 1;
        self.skip_spaces();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                let node = self.flow_node(depth)?;
                self.items.push(node);
                if self.flow_end(b']')? {
                    break;
                }
            }
        }
        Ok(Node {
            mark,
            kind: Kind::Sequence(tree::take(&mut self.items, start)),
        })
    }

    /// `{k: v, ...}` on one line.
    fn flow_mapping(&mut self, depth: usize) -> Fast<Node<'a>> {
        if depth > MAX_DEPTH {
            return Err(Unsupported);
        }
        let mark = self.mark(self.pos);
        let start = self.pairs.len();
        let mut keys = KeySet::default();
        self.pos += 1;
        self.skip_spaces();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                let key = match self.peek() {
                    Some(b'"') => self.double_quoted()?,
                    Some(b'\'') => self.single_quoted()?,
                    _ => self.plain(true)?,
                };
                if self.peek() != Some(b':') || self.at(self.pos + 1) != Some(b' ') {
                    return Err(Unsupported);
                }
                self.check_key(start, &mut keys, &key);
                self.pos += 1;
                self.skip_spaces();
                let value = self.flow_node(depth)?;
                self.pairs.push((key, value));
                if self.flow_end(b'}')? {
                    break;
                }
            }
        }
        Ok(Node {
            mark,
            kind: Kind::Mapping(tree::take(&mut self.pairs, start)),
        })
    }

    /// After a flow item: `,` (another item follows: false) or `close` (the
    /// collection ends: true). Anything else, such as `:` (an implicit
    /// pair), a comment, a line break or a trailing comma, is for the full
    /// parser.
    fn flow_end(&mut self, close: u8) -> Fast<bool> {
        self.skip_spaces();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                self.skip_spaces();
                if self.peek() == Some(close) {
                    return Err(Unsupported);
                }
                Ok(false)
            }
            Some(c) if c == close => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(Unsupported),
        }
    }

    /// Checks a key of the mapping whose entries start at `start`, remembering the first
    /// duplicate. Keys are checked before their values are parsed, as the full path does.
    fn check_key(&mut self, start: usize, keys: &mut KeySet, key: &Node<'a>) {
        let entries = self.pairs.get(start..).unwrap_or_default();
        if let Some(first) = keys.check(entries, key, &self.hasher)
            && self.duplicate.is_none()
        {
            self.duplicate = Some(YamlError::DuplicateKey {
                key: tree::key_text(key).unwrap_or_default().to_owned(),
                mark: key.mark,
                first,
            });
        }
    }
}
