//! Files → one desired state. Functions merge into chains keyed by
//! (netns, interface, hook); clashes between definitions name both places.

use std::collections::BTreeMap;

use super::error::{ConfigError, ErrorKind};
use super::resolve::FileDesired;
use super::yaml::Mark;
use crate::desired::{DesiredChain, DesiredState};
use crate::model::{ChainKey, Source, TcAttach, TcSettings, XdpMode, limits};

/// A clash: the error, and the files involved (the one reported first).
#[derive(Debug)]
pub struct Conflict {
    /// The error, reported at the later definition.
    pub error: ConfigError,
    /// Config file names involved (keys of the merge input).
    pub files: Vec<String>,
}

fn at(src: &Source, kind: ErrorKind) -> ConfigError {
    ConfigError::at(&src.file, Mark::new(src.line, src.col), kind)
}

/// Merges files (in the given order, which is lexical) into a desired state.
/// `files` pairs each file's key (its name in the config dir) with what it defines.
pub fn merge(files: &[(&str, &FileDesired)]) -> (DesiredState, Vec<Conflict>) {
    let mut desired = DesiredState::default();
    let mut conflicts = Vec::new();
    let mut owner: BTreeMap<(ChainKey, String), (&str, Source)> = BTreeMap::new();
    // Per chain and setting: (file, value as text, where).
    let mut settings: BTreeMap<(ChainKey, &'static str), (&str, String, Source)> = BTreeMap::new();
    let mut file_of: BTreeMap<Source, &str> = BTreeMap::new();

    for (name, fd) in files {
        for s in &fd.chains {
            let given = [
                ("xdp_mode", s.xdp_mode.map(|m| m.as_str().to_owned())),
                ("tc_attach", s.tc_attach.map(|a| a.as_str().to_owned())),
                (
                    "tc_position",
                    s.tc_first
                        .map(|f| if f { "first" } else { "last" }.to_owned()),
                ),
                ("tc_priority", s.tc_priority.map(|p| p.to_string())),
            ];
            for (setting, value) in given {
                let Some(value) = value else { continue };
                match settings.get(&(s.key.clone(), setting)) {
                    Some((other_file, other, other_src)) if *other != value => {
                        conflicts.push(Conflict {
                            error: at(
                                &s.source,
                                ErrorKind::ConflictingChain {
                                    chain: s.key.to_string(),
                                    detail: format!("{setting} {value} here but {other}"),
                                    other: other_src.clone(),
                                },
                            ),
                            files: vec![(*other_file).to_owned(), (*name).to_owned()],
                        })
                    }
                    Some(_) => {}
                    None => {
                        settings.insert((s.key.clone(), setting), (name, value, s.source.clone()));
                    }
                }
            }
        }
        for (key, f) in &fd.functions {
            let slot = (key.clone(), f.name.clone());
            if let Some((other_file, other_src)) = owner.get(&slot) {
                conflicts.push(Conflict {
                    error: at(
                        &f.source,
                        ErrorKind::DuplicateFunction {
                            name: f.name.clone(),
                            chain: key.to_string(),
                            other: other_src.clone(),
                        },
                    ),
                    files: vec![(*other_file).to_owned(), (*name).to_owned()],
                });
                continue;
            }
            owner.insert(slot, (name, f.source.clone()));
            file_of.insert(f.source.clone(), name);
            desired
                .chains
                .entry(key.clone())
                .or_insert_with(|| DesiredChain {
                    xdp_mode: XdpMode::Auto,
                    tc: TcSettings::default(),
                    settings: None,
                    functions: Vec::new(),
                })
                .functions
                .push(f.clone());
        }
    }

    for (key, chain) in desired.chains.iter_mut() {
        let setting = |name: &'static str| settings.get(&(key.clone(), name));
        if let Some((_, mode, src)) = setting("xdp_mode") {
            chain.xdp_mode = match mode.as_str() {
                "native" => XdpMode::Native,
                "generic" => XdpMode::Generic,
                _ => XdpMode::Auto,
            };
            chain.settings = Some(src.clone());
        }
        if let Some((_, attach, src)) = setting("tc_attach") {
            chain.tc.attach = match attach.as_str() {
                "tcx" => TcAttach::Tcx,
                "clsact" => TcAttach::Clsact,
                _ => TcAttach::Auto,
            };
            chain.settings = Some(src.clone());
        }
        if let Some((_, position, _)) = setting("tc_position") {
            chain.tc.first = position == "first";
        }
        if let Some((_, priority, _)) = setting("tc_priority") {
            chain.tc.priority = priority.parse().unwrap_or(chain.tc.priority);
        }
        chain
            .functions
            .sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        if chain.functions.len() > limits::MAX_SLOTS {
            let extra = &chain.functions[limits::MAX_SLOTS];
            conflicts.push(Conflict {
                error: at(
                    &extra.source,
                    ErrorKind::TooManyFunctions {
                        chain: key.to_string(),
                        count: chain.functions.len(),
                        max: limits::MAX_SLOTS,
                    },
                ),
                files: vec![
                    file_of
                        .get(&extra.source)
                        .copied()
                        .unwrap_or_default()
                        .to_owned(),
                ],
            });
        }
        if let Some(pos) = chain.functions.iter().position(|f| !f.program.uses_abi)
            && let Some(next) = chain.functions.get(pos + 1)
        {
            let f = &chain.functions[pos];
            conflicts.push(Conflict {
                error: at(
                    &f.source,
                    ErrorKind::NonAbiNotLast {
                        function: f.name.clone(),
                        chain: key.to_string(),
                        next: next.name.clone(),
                    },
                ),
                files: [&f.source, &next.source]
                    .iter()
                    .filter_map(|s| file_of.get(*s).map(|n| (*n).to_owned()))
                    .collect(),
            });
        }
    }
    (desired, conflicts)
}
