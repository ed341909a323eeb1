//! Config errors: each one names the file and, when it can, the line and
//! column, and prints as `file:line:col: message`.

use std::fmt;

use super::files::FileError;
use super::yaml::{Mark, YamlError};
use crate::btf::{EncodeError, ObjectError};
use crate::kernel::netns::NetnsNameError;
use crate::model::Source;

/// One problem in one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, as the user named it (a path).
    pub file: String,
    /// Where in the file, when known.
    pub mark: Option<Mark>,
    /// What is wrong.
    #[source]
    pub kind: ErrorKind,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.mark {
            Some(m) => format!("{}:{}:{}: {}", self.file, m.line, m.col, self.kind),
            None => format!("{}: {}", self.file, self.kind),
        };
        // One error, one line, whatever a file name, key or tag holds (YAML
        // decodes `%0A` in a tag, and quoted keys may hold any character).
        write!(f, "{}", Escaped(&text))
    }
}

/// Text with its control characters escaped (`\n`, `\u{1b}`): a name that
/// comes from config or from the kernel (a file, an interface, a
/// namespace) then prints on one line and cannot drive a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, false)
    }
}

/// [`Escaped`], but newlines stay: for text that is several lines by
/// design (an error carrying the verifier's log), whose other control
/// characters (an escape sequence in a name) must still not reach a terminal.
#[derive(Debug, Clone, Copy)]
pub struct EscapedLines<'a>(pub &'a str);

impl fmt::Display for EscapedLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, true)
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str, keep_newlines: bool) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() && !(keep_newlines && c == '\n') {
            write!(f, "{}", c.escape_default())?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    Ok(())
}

impl ConfigError {
    /// An error at `mark` of `file`.
    pub fn at(file: &str, mark: Mark, kind: ErrorKind) -> Self {
        Self {
            file: file.to_owned(),
            mark: Some(mark),
            kind,
        }
    }

    /// An error about `file` as a whole.
    pub fn file(file: &str, kind: ErrorKind) -> Self {
        Self {
            file: file.to_owned(),
            mark: None,
            kind,
        }
    }

    /// The error's location as a [`Source`].
    pub fn source_at(&self) -> Source {
        let m = self.mark.unwrap_or_default();
        Source {
            file: self.file.clone(),
            line: m.line,
            col: m.col,
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names.join(", ")
}

/// What is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// Reading failed.
    #[error("{0}")]
    Read(#[source] FileError),
    /// The bytes are not UTF-8.
    #[error("not valid UTF-8 (is this a YAML file?)")]
    NotUtf8,
    /// The file holds no document.
    #[error("file is empty (an empty file changes nothing; its last good version stays in force)")]
    Empty,
    /// YAML syntax or structure.
    #[error("{0}")]
    Yaml(#[source] YamlError),
    /// A JSON Schema violation.
    #[error("{path}: {message}")]
    Schema {
        /// Where, as `functions[0].hook`.
        path: String,
        /// The schema's complaint.
        message: String,
    },
    /// Both or neither of `interface`/`interfaces`.
    #[error("function {function}: give exactly one of `interface` or `interfaces`")]
    InterfaceChoice {
        /// The function.
        function: String,
    },
    /// An integer setting written as a float (`1e3`, `10.0`).
    #[error("{field}: {text} is a float, not an integer (write {integer})")]
    FloatForInteger {
        /// The setting.
        field: String,
        /// As written.
        text: String,
        /// The integer it equals (the schema allows only whole numbers here).
        integer: i128,
    },
    /// A `netns:` that can name no namespace.
    #[error("netns {netns:?}: {reason}")]
    BadNetns {
        /// As written.
        netns: String,
        /// Why not.
        #[source]
        reason: NetnsNameError,
    },
    /// An interface name Linux can never create.
    #[error("interface {name:?} can never exist: {reason}")]
    ImpossibleInterface {
        /// The name.
        name: String,
        /// What Linux refuses in it.
        reason: String,
    },
    /// Both or neither of `builtin`/`object`.
    #[error("program: give exactly one of `builtin` or `object`")]
    ProgramChoice,
    /// No such bundled function.
    #[error("unknown builtin program {name:?} (builtins: {})", list(.known))]
    UnknownBuiltin {
        /// What was asked for.
        name: String,
        /// What exists.
        known: Vec<String>,
    },
    /// The object file could not be read.
    #[error("object {path}: {source}")]
    ObjectRead {
        /// The path.
        path: String,
        /// The failure.
        #[source]
        source: FileError,
    },
    /// The object could not be parsed.
    #[error("object {path}: {source}")]
    ObjectParse {
        /// The path or builtin name.
        path: String,
        /// The failure.
        #[source]
        source: ObjectError,
    },
    /// The object's digest differs from the pinned one.
    #[error(
        "object {path} has sha256 {actual}, but the config pins {expected}; refusing to load it"
    )]
    Sha256Mismatch {
        /// The path.
        path: String,
        /// From config.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// The object has no such program.
    #[error("object has no program {wanted} (programs: {})", list(.available))]
    NoSuchProgram {
        /// Asked for (a name or `section NAME`).
        wanted: String,
        /// What it has, as `name (section)`.
        available: Vec<String>,
    },
    /// Several programs and no choice.
    #[error("object holds several programs ({}); choose one with `program:` or `section:`", list(.available))]
    AmbiguousProgram {
        /// What it has.
        available: Vec<String>,
    },
    /// The program's type does not fit the hook.
    #[error("program {program} is in section {section:?}, which is not a {hook} program{hint}")]
    WrongProgramType {
        /// The program.
        program: String,
        /// Its section.
        section: String,
        /// The hook.
        hook: String,
        /// What section the hook needs.
        hint: String,
    },
    /// A verdict that the hook does not have.
    #[error("{verdict:?} is not a {hook} verdict (valid: {})", list(.valid))]
    VerdictNotOnHook {
        /// The verdict.
        verdict: String,
        /// The hook.
        hook: String,
        /// Valid verdicts.
        valid: Vec<String>,
    },
    /// `xdp_mode` on a TC chain.
    #[error("xdp_mode applies to xdp chains only, not {hook}")]
    XdpModeOnTc {
        /// The hook.
        hook: String,
    },
    /// A chain setting for another kind of hook.
    #[error("{setting} applies to {applies_to} chains only, not {hook}")]
    WrongHookSetting {
        /// The setting.
        setting: String,
        /// The hooks it is for.
        applies_to: String,
        /// The chain's hook.
        hook: String,
    },
    /// No such global (or a `kf_*` name, which the ABI reserves).
    #[error("the object has no read-only global {name:?} (settable: {}; kf_* names are reserved)", list(.settable))]
    UnknownGlobal {
        /// Asked for.
        name: String,
        /// `const volatile` globals of the object.
        settable: Vec<String>,
    },
    /// A global that cannot be set at load.
    #[error(
        "global {name:?} is in {section}; only read-only globals (.rodata, `const volatile`) can be set from config"
    )]
    GlobalNotReadOnly {
        /// The global.
        name: String,
        /// Its section.
        section: String,
    },
    /// No such map in the object.
    #[error("program {program} has no map {map:?} (maps: {})", list(.known))]
    UnknownMap {
        /// Asked for.
        map: String,
        /// The program.
        program: String,
        /// What it has.
        known: Vec<String>,
    },
    /// A map kfd owns for the chain.
    #[error("map {map:?} belongs to the chain (kfd ABI); it cannot be configured")]
    ChainMap {
        /// The map.
        map: String,
    },
    /// A map kind whose entries cannot come from config.
    #[error("map {map:?} is a {kind} map; its entries cannot be set from config")]
    UnsupportedMap {
        /// The map.
        map: String,
        /// Its kind.
        kind: String,
    },
    /// A key, value or global that does not encode.
    #[error("{what}: {source}")]
    Encode {
        /// `map deny_v4`, `global sample_rate`, ...
        what: String,
        /// The encoder's complaint.
        #[source]
        source: EncodeError,
    },
    /// The same key twice in one map.
    #[error("map {map}: duplicate key {key} (first at line {first_line})")]
    DuplicateKey {
        /// The map.
        map: String,
        /// The key as written the second time.
        key: String,
        /// Line of the first.
        first_line: u32,
    },
    /// More entries than the map holds.
    #[error(
        "function {function}: map {map}: {count} entries, but it holds at most {max} (max_entries)"
    )]
    TooManyEntries {
        /// The function.
        function: String,
        /// The map.
        map: String,
        /// Entries configured.
        count: usize,
        /// Its capacity.
        max: u32,
    },
    /// A key given both as an entry (kfd's) and as a seed (the program's).
    #[error(
        "map {map}: key {key} is a seed here and an entry at line {entry_line}: a key is either kfd's (entries:) or the program's (seed:)"
    )]
    SeedAndEntry {
        /// The map.
        map: String,
        /// The key as written.
        key: String,
        /// Line of the entry.
        entry_line: u32,
    },
    /// Users of one shared map disagree.
    #[error("shared map {share}: {detail} at {other}")]
    SharedMap {
        /// The share.
        share: String,
        /// What differs.
        detail: String,
        /// The other user's `share:`.
        other: Source,
    },
    /// A map the object leaves unsized, with no size in config.
    #[error(
        "map {map} has max_entries 0 in the object (its loader sizes it at run time): set maps.{map}.max_entries"
    )]
    Unsized {
        /// The map.
        map: String,
    },
    /// An array index past the end.
    #[error("map {map}: index {index} is out of range (array of {max} elements)")]
    IndexOutOfRange {
        /// The map.
        map: String,
        /// The index.
        index: u32,
        /// Its size.
        max: u32,
    },
    /// A function defined twice on one chain.
    #[error("function {name} is defined twice on {chain}; the other definition is at {other}")]
    DuplicateFunction {
        /// The function.
        name: String,
        /// The chain.
        chain: String,
        /// The other definition.
        other: Source,
    },
    /// Two different settings for one chain.
    #[error("chain {chain} is given {detail}; the other setting is at {other}")]
    ConflictingChain {
        /// The chain.
        chain: String,
        /// What differs.
        detail: String,
        /// The other setting.
        other: Source,
    },
    /// Too many functions on one chain.
    #[error(
        "chain {chain} would hold {count} functions ({here} from this file); at most {max} fit"
    )]
    TooManyFunctions {
        /// The chain.
        chain: String,
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
        /// How many of them the reported file defines.
        here: usize,
    },
    /// An XDP chain with programs for multi-buffer packets and programs without.
    #[error(
        "function {frags} is an xdp.frags program and {plain} (at {other}) is not: the kernel \
         runs one chain's programs one way or the other, so they cannot share {chain}"
    )]
    MixedFrags {
        /// The chain.
        chain: String,
        /// A function in `xdp.frags`.
        frags: String,
        /// A function that is not.
        plain: String,
        /// Where `plain` is defined.
        other: Source,
    },
    /// A non-ABI program that is not last.
    #[error(
        "function {function} does not use the kfd ABI (it never calls kf_next), so it can only run last on {chain}, \
         but {next} runs after it (give {function} a larger priority number)"
    )]
    NonAbiNotLast {
        /// The function.
        function: String,
        /// The chain.
        chain: String,
        /// The function after it.
        next: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_stays_on_one_line() {
        assert_eq!(
            Escaped("a\nb\tc\u{7f}d\u{1b}é").to_string(),
            "a\\nb\\tc\\u{7f}d\\u{1b}é"
        );
        assert_eq!(Escaped("plain eth0").to_string(), "plain eth0");
        assert_eq!(
            EscapedLines("log:\n0: r1\te\u{1b}[0m").to_string(),
            "log:\n0: r1\\te\\u{1b}[0m"
        );
    }
}
