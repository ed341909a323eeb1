//! One validated file → owned, encoded functions and chain settings.
//!
//! Everything that needs the program's object happens here: choosing the
//! program, checking map and global names, and encoding every key, value and
//! global from BTF. The YAML tree is dropped afterwards; marks survive as
//! [`Source`]s.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest as _, Sha256};

use super::error::{ConfigError, ErrorKind};
use super::files::{self, ReadRules};
use super::yaml::{Mark, Node, Resolved};
use crate::btf::{Decoder, Encoder, MapDef, ObjectInfo};
use crate::builtin::{self, ObjectKind, shape_of_def};
use crate::desired::{
    DesiredFunction, DesiredMap, EntryFormat, ProgramImage, ProgramOrigin, ShareConfig, StateMap,
};
use crate::entries::EntrySet;
use crate::kernel::netns;
use crate::layout::CHAIN_MAPS;
use crate::model::{
    ChainKey, Digest, Hook, Origin, Source, TcAttach, UpdateMode, XdpMode, map_type,
};

/// Priority of a function that does not say.
pub const DEFAULT_PRIORITY: u32 = 100;

/// Errors reported per file before stopping.
const MAX_ERRORS: usize = 20;

/// A `chains:` entry.
#[derive(Debug, Clone)]
pub struct ChainSetting {
    /// The chain.
    pub key: ChainKey,
    /// Its XDP mode, if set.
    pub xdp_mode: Option<XdpMode>,
    /// TC: how the root is attached, if set.
    pub tc_attach: Option<TcAttach>,
    /// TC with TCX: first (true) or last, if set.
    pub tc_first: Option<bool>,
    /// TC with clsact: the filter's priority, if set.
    pub tc_priority: Option<u16>,
    /// Where.
    pub source: Source,
}

/// What one file contributes.
#[derive(Debug, Default)]
pub struct FileDesired {
    /// Chain settings.
    pub chains: Vec<ChainSetting>,
    /// Functions, one per (chain, function): `interfaces:` is expanded.
    pub functions: Vec<(ChainKey, DesiredFunction)>,
    /// Functions whose object cannot be used now (missing, untrusted,
    /// damaged, another sha256). A file with any is not used as it is now;
    /// in the last good version that stands in for it, these functions'
    /// live instances are kept exactly as they are.
    pub unusable: Vec<(ChainKey, Unusable)>,
    /// The errors behind `unusable`, one per function.
    pub object_errors: Vec<ConfigError>,
}

/// A function of a valid file whose object cannot be used right now.
#[derive(Debug, Clone)]
pub struct Unusable {
    /// The function.
    pub name: String,
    /// Where it is defined.
    pub source: Source,
    /// Its priority (it still counts towards the chain's functions).
    pub priority: u32,
    /// The error, as reported.
    pub error: String,
}

/// Objects read during one load, by path (builtins are cached for the process).
#[derive(Default)]
pub struct Objects {
    files: HashMap<String, Arc<LoadedObject>>,
}

/// An object's bytes and what is known about them.
pub struct LoadedObject {
    bytes: Arc<[u8]>,
    info: Arc<ObjectInfo>,
    sha256: Digest,
}

fn sha256(parts: &[&[u8]]) -> Digest {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// The plain SHA-256 of a file, as `sha256sum` prints it (what `sha256:` pins).
fn file_sha256(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A bundled KF, parsed once per process (the embedded bytes never change).
fn builtin_object(name: &str) -> Option<Result<Arc<LoadedObject>, crate::btf::ObjectError>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<LoadedObject>>>> = OnceLock::new();
    let bytes = builtin::object(ObjectKind::Function, name)?;
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(o) = cache.get(name) {
        return Some(Ok(o.clone()));
    }
    Some(crate::btf::inspect(bytes).map(|info| {
        let o = Arc::new(LoadedObject {
            bytes: Arc::from(bytes),
            info: Arc::new(info),
            sha256: file_sha256(bytes),
        });
        cache.insert(name.to_owned(), o.clone());
        o
    }))
}

/// Keys and values printed from BTF.
#[derive(Debug)]
struct BtfFormat {
    key: Decoder,
    value: Decoder,
}

impl EntryFormat for BtfFormat {
    fn key(&self, bytes: &[u8]) -> String {
        self.key.decode(bytes)
    }
    fn value(&self, bytes: &[u8]) -> String {
        self.value.decode(bytes)
    }
}

struct Ctx<'f> {
    file: &'f str,
    origin: Origin,
    rules: ReadRules,
    errors: Vec<ConfigError>,
    /// Errors of objects that cannot be used; they do not fail the file.
    object_errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn err(&mut self, mark: Mark, kind: ErrorKind) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(ConfigError::at(self.file, mark, kind));
        }
    }

    fn source(&self, mark: Mark) -> Source {
        Source {
            file: self.file.to_owned(),
            line: mark.line,
            col: mark.col,
        }
    }

    fn full(&self) -> bool {
        self.errors.len() >= MAX_ERRORS
    }
}

/// Resolves a schema-valid document. `origin` is recorded with every
/// function it defines.
pub fn resolve(
    file: &str,
    origin: Origin,
    root: &Node<'_>,
    objects: &mut Objects,
    rules: &ReadRules,
) -> Result<FileDesired, Vec<ConfigError>> {
    let mut ctx = Ctx {
        file,
        origin,
        rules: *rules,
        errors: Vec::new(),
        object_errors: Vec::new(),
    };
    let mut out = FileDesired::default();
    for c in root
        .get("chains")
        .and_then(Node::as_sequence)
        .unwrap_or_default()
    {
        if let Some(setting) = chain_setting(&mut ctx, c) {
            out.chains.push(setting);
        }
    }
    for f in root
        .get("functions")
        .and_then(Node::as_sequence)
        .unwrap_or_default()
    {
        if ctx.full() {
            break;
        }
        match function(&mut ctx, f, objects) {
            Entry::Functions(fns) => out.functions.extend(fns),
            Entry::Unusable(held) => out.unusable.extend(held),
        }
    }
    if ctx.errors.is_empty() {
        out.object_errors = ctx.object_errors;
        Ok(out)
    } else {
        Err(ctx.errors)
    }
}

/// What one `functions:` entry resolves to.
enum Entry {
    /// Ready to load, one per chain (none when the entry is in error).
    Functions(Vec<(ChainKey, DesiredFunction)>),
    /// Valid, but its object cannot be used now.
    Unusable(Vec<(ChainKey, Unusable)>),
}

fn str_of<'n>(node: &'n Node<'_>, key: &str) -> Option<&'n str> {
    node.get(key).and_then(Node::as_str)
}

/// The integer field `key` of `node`: Some(None) when absent, None when
/// written as a float (reported). JSON Schema counts `10.0` and `1e3` as
/// integers, so they pass the schema's type and range checks, but YAML
/// reads them as floats; they must not fall back to a default unnoticed.
fn integer_field(ctx: &mut Ctx<'_>, node: &Node<'_>, key: &str) -> Option<Option<i128>> {
    let Some(field) = node.get(key) else {
        return Some(None);
    };
    let Some(scalar) = field.as_scalar() else {
        return Some(None); // not a scalar: the schema reported it
    };
    match scalar.resolve() {
        Resolved::Int(i) => Some(Some(i)),
        Resolved::Float(f) => {
            ctx.err(
                field.mark,
                ErrorKind::FloatForInteger {
                    field: key.to_owned(),
                    text: scalar.text.to_string(),
                    integer: f as i128,
                },
            );
            None
        }
        _ => Some(None),
    }
}

/// The `netns:` of `node` in its one spelling ([`netns::normalise`]):
/// Some(None) when absent, None when it can name no namespace (reported).
fn netns_of(ctx: &mut Ctx<'_>, node: &Node<'_>) -> Option<Option<String>> {
    let Some(field) = node.get("netns") else {
        return Some(None);
    };
    let written = field.as_str()?;
    match netns::normalise(written) {
        Ok(n) => Some(Some(n)),
        Err(reason) => {
            ctx.err(
                field.mark,
                ErrorKind::BadNetns {
                    netns: written.to_owned(),
                    reason,
                },
            );
            None
        }
    }
}

/// Longest interface name Linux takes, in bytes (`IFNAMSIZ` - 1).
const MAX_INTERFACE_BYTES: usize = 15;

/// Why Linux can never create an interface of this name (its
/// `dev_valid_name`), if it cannot: a chain on it would wait forever.
fn impossible_interface(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name == "." || name == ".." {
        return Some(format!("Linux refuses {name:?} as a name"));
    }
    if name.len() > MAX_INTERFACE_BYTES {
        return Some(format!(
            "it is {} bytes long, and Linux takes at most {MAX_INTERFACE_BYTES}",
            name.len()
        ));
    }
    // isspace() in the kernel: the ASCII ones only.
    let refused = |c: char| {
        matches!(
            c,
            '/' | ':' | '\0' | ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r'
        )
    };
    name.chars()
        .find(|c| refused(*c))
        .map(|c| format!("Linux refuses {c:?} in a name"))
}

/// The interface `node` names, or None (reported) when it is not a name
/// Linux could ever give an interface.
fn interface_name<'n>(ctx: &mut Ctx<'_>, node: &'n Node<'_>) -> Option<&'n str> {
    let name = node.as_str()?;
    match impossible_interface(name) {
        None => Some(name),
        Some(reason) => {
            ctx.err(
                node.mark,
                ErrorKind::ImpossibleInterface {
                    name: name.to_owned(),
                    reason,
                },
            );
            None
        }
    }
}

fn chain_setting(ctx: &mut Ctx<'_>, c: &Node<'_>) -> Option<ChainSetting> {
    let hook = Hook::parse(str_of(c, "hook")?)?;
    let interface = interface_name(ctx, c.get("interface")?)?;
    let key = ChainKey {
        netns: netns_of(ctx, c)?,
        interface: interface.to_owned(),
        hook,
    };
    let xdp_mode = match str_of(c, "xdp_mode") {
        None => None,
        Some(m) if hook != Hook::Xdp => {
            let mark = c.get("xdp_mode").map_or(c.mark, |n| n.mark);
            ctx.err(
                mark,
                ErrorKind::XdpModeOnTc {
                    hook: hook.to_string(),
                },
            );
            let _ = m;
            return None;
        }
        Some("native") => Some(XdpMode::Native),
        Some("generic") => Some(XdpMode::Generic),
        Some(_) => Some(XdpMode::Auto),
    };
    // TC settings on an XDP chain are a mistake worth naming.
    let mut tc_only = |name: &str| -> Option<bool> {
        let node = c.get(name)?;
        if hook == Hook::Xdp {
            ctx.err(
                node.mark,
                ErrorKind::WrongHookSetting {
                    setting: name.to_owned(),
                    applies_to: "tc-ingress and tc-egress".into(),
                    hook: hook.to_string(),
                },
            );
            return Some(false);
        }
        Some(true)
    };
    let ok = [
        tc_only("tc_attach"),
        tc_only("tc_position"),
        tc_only("tc_priority"),
    ];
    if ok.contains(&Some(false)) {
        return None;
    }
    let tc_attach = str_of(c, "tc_attach").map(|a| match a {
        "tcx" => TcAttach::Tcx,
        "clsact" => TcAttach::Clsact,
        _ => TcAttach::Auto,
    });
    let tc_first = str_of(c, "tc_position").map(|p| p != "last");
    // The schema checked the range.
    let tc_priority = integer_field(ctx, c, "tc_priority")?.and_then(|p| u16::try_from(p).ok());
    Some(ChainSetting {
        key,
        xdp_mode,
        tc_attach,
        tc_first,
        tc_priority,
        source: ctx.source(c.mark),
    })
}

fn function(ctx: &mut Ctx<'_>, f: &Node<'_>, objects: &mut Objects) -> Entry {
    let (Some(name), Some(hook)) = (str_of(f, "name"), str_of(f, "hook").and_then(Hook::parse))
    else {
        return Entry::Functions(Vec::new()); // the schema reported it
    };
    let interfaces: Vec<&Node<'_>> = match (f.get("interface"), f.get("interfaces")) {
        (Some(i), None) => vec![i],
        (None, Some(list)) => list.as_sequence().unwrap_or_default().iter().collect(),
        _ => {
            ctx.err(
                f.mark,
                ErrorKind::InterfaceChoice {
                    function: name.to_owned(),
                },
            );
            return Entry::Functions(Vec::new());
        }
    };
    let interfaces: Vec<Option<&str>> = interfaces
        .into_iter()
        .map(|i| interface_name(ctx, i))
        .collect();
    let Some(interfaces) = interfaces.into_iter().collect::<Option<Vec<&str>>>() else {
        return Entry::Functions(Vec::new());
    };
    let Some(netns) = netns_of(ctx, f) else {
        return Entry::Functions(Vec::new());
    };
    let keys: Vec<ChainKey> = interfaces
        .into_iter()
        .map(|iface| ChainKey {
            netns: netns.clone(),
            interface: iface.to_owned(),
            hook,
        })
        .collect();
    // The schema checked the range.
    let Some(priority) = integer_field(ctx, f, "priority") else {
        return Entry::Functions(Vec::new());
    };
    let priority = priority.map_or(DEFAULT_PRIORITY, |p| p as u32);
    let Some(program_node) = f.get("program") else {
        return Entry::Functions(Vec::new());
    };
    let image = match program(ctx, program_node, hook, objects) {
        Ok(image) => image,
        Err(Unresolved::Config) => return Entry::Functions(Vec::new()),
        Err(Unresolved::Object(e)) => {
            // The file is fine; the object is not usable now (an upgrade
            // replacing it, a chmod, a sha256 that no longer matches).
            let held = Unusable {
                name: name.to_owned(),
                source: ctx.source(f.mark),
                priority,
                error: e.kind.to_string(),
            };
            ctx.object_errors.push(*e);
            return Entry::Unusable(keys.into_iter().map(|k| (k, held.clone())).collect());
        }
    };
    let proceed_on = proceed_on(ctx, f, hook);
    let info = image.1.clone();
    let globals = globals(ctx, f, &info);
    let maps = maps(ctx, f, &image.0, &info);
    let (Some(proceed_on), Some(globals), Some(maps)) = (proceed_on, globals, maps) else {
        return Entry::Functions(Vec::new());
    };
    // A map the object leaves unsized (its loader would set the size at
    // run time) needs one from config.
    let unsized_map = image.0.maps.iter().find(|(name, shape)| {
        shape.max_entries == 0
            && shape.map_type != map_type::PERF_EVENT_ARRAY
            && !maps.sizes.contains_key(*name)
    });
    if let Some((map, _)) = unsized_map {
        let at = program_node.mark;
        ctx.err(at, ErrorKind::Unsized { map: map.clone() });
        return Entry::Functions(Vec::new());
    }
    let globals_digest = {
        let mut parts: Vec<&[u8]> = Vec::new();
        for (n, b) in &globals {
            parts.push(n.as_bytes());
            parts.push(b);
        }
        sha256(&parts)
    };
    Entry::Functions(
        keys.into_iter()
            .map(|key| {
                (
                    key,
                    DesiredFunction {
                        name: name.to_owned(),
                        priority,
                        source: ctx.source(f.mark),
                        program: image.0.clone(),
                        proceed_on,
                        globals: globals.clone(),
                        globals_digest,
                        maps: maps.config.clone(),
                        state: maps.state.clone(),
                        sizes: maps.sizes.clone(),
                        shares: maps.shares.clone(),
                        origin: ctx.origin,
                    },
                )
            })
            .collect(),
    )
}

/// Why a program could not be had.
enum Unresolved {
    /// A config error, already recorded.
    Config,
    /// The object cannot be used now.
    Object(Box<ConfigError>),
}

fn program(
    ctx: &mut Ctx<'_>,
    p: &Node<'_>,
    hook: Hook,
    objects: &mut Objects,
) -> Result<(Arc<ProgramImage>, Arc<ObjectInfo>), Unresolved> {
    // Errors that come from the object's content or state, not the YAML.
    let object_err = |ctx: &Ctx<'_>, mark: Mark, kind: ErrorKind| {
        Unresolved::Object(Box::new(ConfigError::at(ctx.file, mark, kind)))
    };
    let (origin, loaded) = match (str_of(p, "builtin"), str_of(p, "object")) {
        (Some(name), None) => match builtin_object(name) {
            None => {
                let mark = p.get("builtin").map_or(p.mark, |n| n.mark);
                ctx.err(
                    mark,
                    ErrorKind::UnknownBuiltin {
                        name: name.to_owned(),
                        known: builtin::function_names()
                            .into_iter()
                            .map(str::to_owned)
                            .collect(),
                    },
                );
                return Err(Unresolved::Config);
            }
            Some(Err(source)) => {
                ctx.err(
                    p.mark,
                    ErrorKind::ObjectParse {
                        path: format!("builtin:{name}"),
                        source,
                    },
                );
                return Err(Unresolved::Config);
            }
            Some(Ok(o)) => (ProgramOrigin::Builtin(name.to_owned()), o),
        },
        (None, Some(path)) => {
            let mark = p.get("object").map_or(p.mark, |n| n.mark);
            let loaded = match objects.files.get(path) {
                Some(o) => Ok(o.clone()),
                None => read_object(path, &ctx.rules).inspect(|o| {
                    objects.files.insert(path.to_owned(), o.clone());
                }),
            };
            match loaded {
                Ok(o) => {
                    if let Some(want) = str_of(p, "sha256")
                        && !want.eq_ignore_ascii_case(&hex(&o.sha256))
                    {
                        let mark = p.get("sha256").map_or(mark, |n| n.mark);
                        return Err(object_err(
                            ctx,
                            mark,
                            ErrorKind::Sha256Mismatch {
                                path: path.to_owned(),
                                expected: want.to_ascii_lowercase(),
                                actual: hex(&o.sha256),
                            },
                        ));
                    }
                    (ProgramOrigin::Object(path.into()), o)
                }
                Err(kind) => return Err(object_err(ctx, mark, *kind)),
            }
        }
        _ => {
            ctx.err(p.mark, ErrorKind::ProgramChoice);
            return Err(Unresolved::Config);
        }
    };
    let info = &loaded.info;
    let available = || {
        info.programs
            .iter()
            .map(|p| format!("{} ({})", p.name, p.section))
            .collect::<Vec<_>>()
    };
    let chosen = if let Some(name) = str_of(p, "program") {
        info.program(name).ok_or_else(|| ErrorKind::NoSuchProgram {
            wanted: name.to_owned(),
            available: available(),
        })
    } else if let Some(section) = str_of(p, "section") {
        let matching: Vec<_> = info
            .programs
            .iter()
            .filter(|q| q.section == section)
            .collect();
        match matching.as_slice() {
            [one] => Ok(*one),
            [] => Err(ErrorKind::NoSuchProgram {
                wanted: format!("in section {section}"),
                available: available(),
            }),
            _ => Err(ErrorKind::AmbiguousProgram {
                available: available(),
            }),
        }
    } else {
        // An object may carry one program per hook type (the bundled KFs
        // and many libbpf objects do): the one whose section names the
        // hook's kind is meant, else the object's only program.
        let fitting: Vec<_> = info
            .programs
            .iter()
            .filter(|q| section_family(&q.section) == Some(Family::of(hook)))
            .collect();
        let chosen = match (fitting.as_slice(), info.programs.as_slice()) {
            ([one], _) => Ok(*one),
            ([], [one]) => Ok(one),
            ([], []) => Err(ErrorKind::NoSuchProgram {
                wanted: "(any)".into(),
                available: Vec::new(),
            }),
            _ => Err(ErrorKind::AmbiguousProgram {
                available: available(),
            }),
        };
        // The hook decides the type, but a program whose section says it
        // is for the other kind of hook is a mistake worth naming, unless
        // `program:` or `section:` picked it on purpose.
        match chosen {
            Ok(c) if section_family(&c.section).is_some_and(|f| f != Family::of(hook)) => {
                Err(ErrorKind::WrongProgramType {
                    program: c.name.clone(),
                    section: c.section.clone(),
                    hook: hook.to_string(),
                    hint: format!(
                        " (to load it as a {hook} program anyway, name it: `program: {}`)",
                        c.name
                    ),
                })
            }
            other => other,
        }
    };
    let chosen = match chosen {
        Ok(c) => c,
        Err(kind) => return Err(object_err(ctx, p.mark, kind)),
    };
    let (chain_maps, own_maps): (Vec<&MapDef>, Vec<&MapDef>) = info
        .maps
        .iter()
        .partition(|m| CHAIN_MAPS.contains(&m.name.as_str()));
    let image = ProgramImage {
        origin,
        symbol: chosen.name.clone(),
        frags: is_frags(&chosen.section),
        digest: sha256(&[&loaded.sha256, chosen.name.as_bytes()]),
        uses_abi: info.references_map(&chosen.name, "kf_progs"),
        maps: own_maps
            .iter()
            .map(|m| (m.name.clone(), shape_of_def(m)))
            .collect(),
        chain_maps: chain_maps
            .iter()
            .map(|m| (m.name.clone(), shape_of_def(m)))
            .collect(),
        bytes: loaded.bytes.clone(),
    };
    Ok((Arc::new(image), loaded.info.clone()))
}

/// The kind of hook a program's section suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Xdp,
    Tc,
}

impl Family {
    fn of(hook: Hook) -> Self {
        match hook {
            Hook::Xdp => Family::Xdp,
            Hook::TcIngress | Hook::TcEgress => Family::Tc,
        }
    }
}

/// What a section name says by libbpf's and iproute2's conventions: `xdp`,
/// `xdp.frags`, `xdp/...` and custom `xdp_*` names are XDP; `tc`, `tc/*`,
/// `tcx/*`, `classifier` and `action` are TC; anything else says nothing.
/// Only the choice among an object's programs uses it: the hook decides the
/// type a program is loaded as.
fn section_family(section: &str) -> Option<Family> {
    let first = section.split('/').next().unwrap_or(section);
    if first.starts_with("xdp") {
        Some(Family::Xdp)
    } else if matches!(first, "tc" | "tcx" | "classifier" | "action") || first.starts_with("tc_") {
        Some(Family::Tc)
    } else {
        None
    }
}

/// Whether a program in `section` handles multi-buffer XDP packets
/// (libbpf's `xdp.frags`), which the kernel must be told at load.
fn is_frags(section: &str) -> bool {
    section == "xdp.frags" || section.starts_with("xdp.frags/")
}

fn read_object(path: &str, rules: &ReadRules) -> Result<Arc<LoadedObject>, Box<ErrorKind>> {
    let bytes = files::read(Path::new(path), rules).map_err(|source| ErrorKind::ObjectRead {
        path: path.to_owned(),
        source,
    })?;
    let info = crate::btf::inspect(&bytes).map_err(|source| ErrorKind::ObjectParse {
        path: path.to_owned(),
        source,
    })?;
    let sha256 = file_sha256(&bytes);
    Ok(Arc::new(LoadedObject {
        bytes: Arc::from(bytes),
        info: Arc::new(info),
        sha256,
    }))
}

fn proceed_on(ctx: &mut Ctx<'_>, f: &Node<'_>, hook: Hook) -> Option<u32> {
    let Some(list) = f.get("proceed_on") else {
        return Some(hook.default_proceed_on());
    };
    let mut mask = 0;
    let mut ok = true;
    for v in list.as_sequence().unwrap_or_default() {
        let Some(name) = v.as_str() else { continue };
        match hook.verdict_bit(name) {
            Some(bit) => mask |= 1 << bit,
            None => {
                ok = false;
                ctx.err(
                    v.mark,
                    ErrorKind::VerdictNotOnHook {
                        verdict: name.to_owned(),
                        hook: hook.to_string(),
                        valid: hook
                            .verdicts()
                            .iter()
                            .map(|(n, _)| (*n).to_owned())
                            .collect(),
                    },
                );
            }
        }
    }
    ok.then_some(mask)
}

fn globals(ctx: &mut Ctx<'_>, f: &Node<'_>, info: &ObjectInfo) -> Option<Vec<(String, Vec<u8>)>> {
    let Some(map) = f.get("globals").and_then(Node::as_mapping) else {
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (k, v) in map {
        let name = k
            .as_scalar()
            .map(|s| s.text.to_string())
            .unwrap_or_default();
        // kf_* globals belong to the ABI: kfd sets them per instance.
        let reserved = name.starts_with("kf_");
        let Some(var) = info.global(&name).filter(|_| !reserved) else {
            ok = false;
            ctx.err(
                k.mark,
                ErrorKind::UnknownGlobal {
                    name,
                    settable: info
                        .globals
                        .iter()
                        .filter(|g| g.section.starts_with(".rodata") && !g.name.starts_with("kf_"))
                        .map(|g| g.name.clone())
                        .collect(),
                },
            );
            continue;
        };
        if !var.section.starts_with(".rodata") {
            ok = false;
            ctx.err(
                k.mark,
                ErrorKind::GlobalNotReadOnly {
                    name,
                    section: var.section.clone(),
                },
            );
            continue;
        }
        let enc = match Encoder::global(&info.btf, var) {
            Ok(e) => e,
            Err(e) => {
                ok = false;
                ctx.err(
                    k.mark,
                    ErrorKind::UnsupportedMap {
                        map: format!("global {name}"),
                        kind: e.to_string(),
                    },
                );
                continue;
            }
        };
        let mut bytes = Vec::with_capacity(enc.size());
        match enc.encode(v, &mut bytes) {
            Ok(()) => out.push((name, bytes)),
            Err(source) => {
                ok = false;
                let mark = source.mark;
                ctx.err(
                    mark,
                    ErrorKind::Encode {
                        what: format!("global {name}"),
                        source,
                    },
                );
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    ok.then_some(out)
}

/// Map types whose entries config may set.
fn configurable(t: u32) -> bool {
    matches!(
        t,
        map_type::HASH
            | map_type::ARRAY
            | map_type::PERCPU_HASH
            | map_type::PERCPU_ARRAY
            | map_type::LRU_HASH
            | map_type::LRU_PERCPU_HASH
            | map_type::LPM_TRIE
    )
}

/// What `maps:` configures for one function.
#[derive(Default)]
struct Maps {
    /// Config maps: kfd writes their entries.
    config: BTreeMap<String, DesiredMap>,
    /// State maps with settings (a seed, a size).
    state: BTreeMap<String, StateMap>,
    /// Sizes given by config, for any of the object's maps.
    sizes: BTreeMap<String, u32>,
    /// Shared maps, by object name.
    shares: BTreeMap<String, ShareConfig>,
}

fn maps(ctx: &mut Ctx<'_>, f: &Node<'_>, image: &ProgramImage, info: &ObjectInfo) -> Option<Maps> {
    let mut out = Maps::default();
    let mut ok = true;
    let config = f.get("maps").and_then(Node::as_mapping).unwrap_or_default();
    for (k, cfg) in config {
        let name = k
            .as_scalar()
            .map(|s| s.text.to_string())
            .unwrap_or_default();
        if CHAIN_MAPS.contains(&name.as_str()) {
            ok = false;
            ctx.err(k.mark, ErrorKind::ChainMap { map: name });
            continue;
        }
        let Some(def) = info.map(&name).filter(|_| image.maps.contains_key(&name)) else {
            ok = false;
            ctx.err(
                k.mark,
                ErrorKind::UnknownMap {
                    map: name,
                    program: image.symbol.clone(),
                    known: image.maps.keys().cloned().collect(),
                },
            );
            continue;
        };
        let size = match integer_field(ctx, cfg, "max_entries") {
            Some(size) => size.map(|s| s as u32),
            None => {
                ok = false;
                continue;
            }
        };
        if let Some(size) = size {
            out.sizes.insert(name.clone(), size);
        }
        // A map with entries (or nothing but how they land) is kfd's to
        // write; one with only a seed or a size stays the program's.
        let owned = cfg.get("entries").is_some()
            || !["seed", "max_entries", "share"]
                .iter()
                .any(|key| cfg.get(key).is_some());
        let has_seed = cfg.get("seed").is_some();
        let share = str_of(cfg, "share").map(str::to_owned);
        let mut shape = shape_of_def(def);
        if let Some(size) = size {
            shape.max_entries = size;
        }
        if !owned && !has_seed {
            if let Some(share) = share {
                // Shared as it is: the programs' map, nothing to write.
                out.shares.insert(
                    name,
                    ShareConfig {
                        share,
                        shape,
                        inner: def.inner.as_deref().map(shape_of_def),
                        entries: None,
                        seed: Arc::new(EntrySet::new(
                            def.key_size as usize,
                            def.value_size as usize,
                        )),
                        format: Arc::new(crate::desired::HexFormat),
                        source: ctx.source(k.mark),
                    },
                );
            }
            continue;
        }
        // A map-in-map's entries are those of its inner map (slot 0).
        let contents = match (map_type::is_map_in_map(def.map_type), def.inner.as_deref()) {
            (true, Some(inner)) if configurable(inner.map_type) => inner,
            (false, _) if configurable(def.map_type) => def,
            _ => {
                ok = false;
                ctx.err(
                    k.mark,
                    ErrorKind::UnsupportedMap {
                        map: name,
                        kind: map_type::name(def.map_type),
                    },
                );
                continue;
            }
        };
        let function = str_of(f, "name").unwrap_or_default();
        let capacity = if std::ptr::eq(contents, def) {
            size.unwrap_or(def.max_entries)
        } else {
            contents.max_entries
        };
        let Some(codec) = codec(ctx, &name, contents, info, k.mark) else {
            ok = false;
            continue;
        };
        let list = |key| cfg.get(key).and_then(Node::as_sequence).unwrap_or_default();
        let lists = ListCtx {
            function,
            map: &name,
            def: contents,
            capacity,
            codec: &codec,
            mark: k.mark,
        };
        let entries = if owned {
            encode_list(ctx, &lists, list("entries"), 0)
        } else {
            Some(EntrySet::new(codec.key.size(), codec.value.size()))
        };
        let seed = entries
            .as_ref()
            .and_then(|e| encode_list(ctx, &lists, list("seed"), e.len()));
        let (Some(entries), Some(seed)) = (entries, seed) else {
            ok = false;
            continue;
        };
        // A key in both would be kfd's and the program's.
        if let Some((at, key, line)) = in_both(&codec, list("entries"), list("seed")) {
            ok = false;
            ctx.err(
                at,
                ErrorKind::SeedAndEntry {
                    map: name,
                    key,
                    entry_line: line,
                },
            );
            continue;
        }
        let format = Arc::new(BtfFormat {
            key: codec.key_decoder,
            value: codec.value_decoder,
        });
        let inner = map_type::is_map_in_map(def.map_type).then(|| shape_of_def(contents));
        if !owned {
            match share {
                Some(share) => {
                    out.shares.insert(
                        name,
                        ShareConfig {
                            share,
                            shape,
                            inner,
                            entries: None,
                            seed: Arc::new(seed),
                            format,
                            source: ctx.source(k.mark),
                        },
                    );
                }
                None => {
                    out.state.insert(
                        name,
                        StateMap {
                            seed: Arc::new(seed),
                            source: ctx.source(k.mark),
                            format,
                        },
                    );
                }
            }
            continue;
        }
        let update = match str_of(cfg, "update") {
            Some("entries") => UpdateMode::Entries,
            Some("swap") => UpdateMode::Swap,
            _ => UpdateMode::Auto,
        };
        let swap_threshold = match cfg
            .get("swap_threshold")
            .and_then(Node::as_scalar)
            .map(|s| s.resolve())
        {
            Some(Resolved::Float(f)) => Some(f),
            Some(Resolved::Int(i)) => Some(i as f64),
            _ => None,
        };
        let seed = Arc::new(seed);
        let m = DesiredMap {
            shape,
            inner,
            swap_threshold,
            update,
            entries: Arc::new(entries),
            seed: seed.clone(),
            source: ctx.source(k.mark),
            format: format.clone(),
        };
        match share {
            Some(share) => {
                out.shares.insert(
                    name,
                    ShareConfig {
                        share,
                        shape,
                        inner,
                        entries: Some(m),
                        seed,
                        format,
                        source: ctx.source(k.mark),
                    },
                );
            }
            None => {
                out.config.insert(name, m);
            }
        }
    }
    ok.then_some(out)
}

/// Encoders and decoders of a map's keys and values.
struct Codec {
    key: Encoder,
    value: Encoder,
    key_decoder: Decoder,
    value_decoder: Decoder,
}

/// The codec of `def`'s keys and values: from its BTF types, or raw bytes
/// for a map without them.
fn codec(
    ctx: &mut Ctx<'_>,
    name: &str,
    def: &MapDef,
    info: &ObjectInfo,
    mark: Mark,
) -> Option<Codec> {
    match (def.key_type, def.value_type) {
        (Some(_), Some(_)) => {
            let built = Encoder::map_key(&info.btf, def).and_then(|key| {
                Ok(Codec {
                    key,
                    value: Encoder::map_value(&info.btf, def)?,
                    key_decoder: Decoder::map_key(&info.btf, def)?,
                    value_decoder: Decoder::map_value(&info.btf, def)?,
                })
            });
            match built {
                Ok(c) => Some(c),
                Err(e) => {
                    ctx.err(
                        mark,
                        ErrorKind::UnsupportedMap {
                            map: name.to_owned(),
                            kind: e.to_string(),
                        },
                    );
                    None
                }
            }
        }
        _ => Some(Codec {
            key: Encoder::raw(def.key_size as usize, "key"),
            value: Encoder::raw(def.value_size as usize, "value"),
            key_decoder: Decoder::raw(def.key_size as usize),
            value_decoder: Decoder::raw(def.value_size as usize),
        }),
    }
}

/// A key as the config wrote it (or, written as a mapping or list, as kfd
/// reads it back).
fn written(codec: &Codec, entry: &Node<'_>, bytes: &[u8]) -> String {
    entry
        .get("key")
        .and_then(|n| n.as_scalar())
        .map_or_else(|| codec.key_decoder.decode(bytes), |s| s.text.to_string())
}

/// A seed key that `entries:` lists too: where, the key, and the line of
/// the entry.
fn in_both(codec: &Codec, entries: &[Node<'_>], seed: &[Node<'_>]) -> Option<(Mark, String, u32)> {
    let key_of = |n: &Node<'_>| {
        let mut b = Vec::new();
        let k = n.get("key")?;
        codec.key.encode(k, &mut b).ok().map(|()| (k.mark, b))
    };
    let owned: BTreeMap<Vec<u8>, u32> = entries
        .iter()
        .filter_map(|n| key_of(n).map(|(m, b)| (b, m.line)))
        .collect();
    seed.iter().find_map(|n| {
        let (mark, bytes) = key_of(n)?;
        let line = owned.get(&bytes)?;
        Some((mark, written(codec, n, &bytes), *line))
    })
}

/// What one list of a map's entries is encoded against.
struct ListCtx<'a> {
    function: &'a str,
    map: &'a str,
    /// The map whose entries they are.
    def: &'a MapDef,
    /// Its capacity (from config, else the object).
    capacity: u32,
    codec: &'a Codec,
    /// Where the map is configured.
    mark: Mark,
}

/// Encodes one list of entries (`entries:` or `seed:`). Keys must be
/// unique, and with `already` entries of another list the lists must fit
/// the map.
fn encode_list(
    ctx: &mut Ctx<'_>,
    l: &ListCtx<'_>,
    entries: &[Node<'_>],
    already: usize,
) -> Option<EntrySet> {
    let (kenc, venc) = (&l.codec.key, &l.codec.value);
    let mut keys = Vec::with_capacity(entries.len() * kenc.size());
    let mut values = Vec::with_capacity(entries.len() * venc.size());
    let mut ok = true;
    for e in entries {
        let (Some(k), Some(v)) = (e.get("key"), e.get("value")) else {
            continue;
        };
        for (node, enc, out) in [(k, kenc, &mut keys), (v, venc, &mut values)] {
            let before = out.len();
            if let Err(source) = enc.encode(node, out) {
                ok = false;
                out.truncate(before);
                out.resize(before + enc.size(), 0);
                ctx.err(
                    source.mark,
                    ErrorKind::Encode {
                        what: format!("map {}", l.map),
                        source,
                    },
                );
                if ctx.full() {
                    return None;
                }
            }
        }
    }
    if !ok {
        return None;
    }
    let key_at = |n: &Node<'_>| n.get("key").map_or(n.mark, |k| k.mark);
    if map_type::is_array(l.def.map_type) {
        for (i, k) in keys.chunks_exact(kenc.size().max(1)).enumerate() {
            let index = u32::from_le_bytes(
                k.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0xff; 4]),
            );
            if index >= l.capacity {
                ctx.err(
                    key_at(&entries[i]),
                    ErrorKind::IndexOutOfRange {
                        map: l.map.to_owned(),
                        index,
                        max: l.capacity,
                    },
                );
                return None;
            }
        }
    } else {
        let count = entries.len() + already;
        if count > l.capacity as usize {
            ctx.err(
                l.mark,
                ErrorKind::TooManyEntries {
                    function: l.function.to_owned(),
                    map: l.map.to_owned(),
                    count,
                    max: l.capacity,
                },
            );
            return None;
        }
    }
    let set = match EntrySet::from_unsorted(kenc.size(), venc.size(), keys, values) {
        Ok(s) => s,
        Err(dup) => {
            let second = &entries[dup.second];
            ctx.err(
                key_at(second),
                ErrorKind::DuplicateKey {
                    map: l.map.to_owned(),
                    key: written(l.codec, second, &dup.key),
                    first_line: key_at(&entries[dup.first]).line,
                },
            );
            return None;
        }
    };
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(text: &str) -> Result<FileDesired, Vec<String>> {
        let root = crate::config::yaml::parse(text)
            .expect("YAML")
            .expect("a document");
        let rules = ReadRules {
            max_size: 1 << 20,
            strict_permissions: true,
        };
        let origin = crate::config::origin_of("a.yaml", text.as_bytes());
        resolve("a.yaml", origin, &root, &mut Objects::default(), &rules)
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn every_spelling_of_a_namespace_is_one_chain() {
        let function = |name: &str, netns: &str| {
            format!(
                "  - {{name: {name}, interface: eth0, netns: \"{netns}\", hook: xdp, program: {{builtin: counter}}}}\n"
            )
        };
        let mut text = "version: 1\nchains:\n  - {interface: eth0, netns: /run/netns//blue/, hook: xdp}\nfunctions:\n".to_owned();
        for (i, spelling) in [
            "blue",
            "/run/netns/blue",
            "/run/netns/./blue",
            "/run/netns//blue",
        ]
        .iter()
        .enumerate()
        {
            text.push_str(&function(&format!("f{i}"), spelling));
        }
        let d = resolved(&text).expect("valid");
        let blue = Some("blue".to_owned());
        assert_eq!(d.chains[0].key.netns, blue);
        assert_eq!(d.functions.len(), 4);
        assert!(
            d.functions.iter().all(|(k, _)| k.netns == blue),
            "{:?}",
            d.functions
        );
        let e = resolved(
            "version: 1\nchains:\n  - {interface: eth0, netns: netns/blue, hook: xdp}\nfunctions:\n  - {name: a, interface: eth0, netns: .., hook: xdp, program: {builtin: counter}}\n",
        )
        .expect_err("refused");
        assert_eq!(
            e,
            [
                "a.yaml:3:30: netns \"netns/blue\": a relative path: give a name under /run/netns (no `/`) or an absolute path",
                "a.yaml:5:39: netns \"..\": \"..\" is not a name under /run/netns (it names a directory)",
            ]
        );
    }

    #[test]
    fn interface_names_linux_cannot_create_are_named() {
        for ok in [
            "eth0",
            "veth-a.100",
            "é",
            "ab\u{1}c",
            "abcdefghijklmno",
            "...",
        ] {
            assert_eq!(impossible_interface(ok), None, "{ok:?}");
        }
        for (name, why) in [
            ("", "it is empty"),
            (".", "Linux refuses \".\" as a name"),
            ("..", "Linux refuses \"..\" as a name"),
            (
                "abcdefghijklmnop",
                "it is 16 bytes long, and Linux takes at most 15",
            ),
            (
                "éééééééé",
                "it is 16 bytes long, and Linux takes at most 15",
            ),
            ("a/b", "Linux refuses '/' in a name"),
            ("a:1", "Linux refuses ':' in a name"),
            ("a b", "Linux refuses ' ' in a name"),
            ("a\u{b}b", "Linux refuses '\\u{b}' in a name"),
            ("a\0b", "Linux refuses '\\0' in a name"),
        ] {
            assert_eq!(impossible_interface(name).as_deref(), Some(why), "{name:?}");
        }
    }
}
