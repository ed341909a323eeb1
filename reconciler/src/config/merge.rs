//! Files → one desired state. Functions merge into chains keyed by
//! (netns, interface, hook); clashes between definitions name both places.

use std::collections::BTreeMap;

use super::error::{ConfigError, ErrorKind};
use super::resolve::FileDesired;
use super::yaml::Mark;
use crate::desired::{DesiredChain, DesiredState};
use crate::model::{ChainKey, Source, XdpMode, limits};

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
    let mut settings: BTreeMap<ChainKey, (&str, XdpMode, Source)> = BTreeMap::new();
    let mut file_of: BTreeMap<Source, &str> = BTreeMap::new();

    for (name, fd) in files {
        for s in &fd.chains {
            let Some(mode) = s.xdp_mode else { continue };
            match settings.get(&s.key) {
                Some((other_file, other_mode, other_src)) if *other_mode != mode => {
                    conflicts.push(Conflict {
                        error: at(
                            &s.source,
                            ErrorKind::ConflictingChain {
                                chain: s.key.to_string(),
                                detail: format!(
                                    "xdp_mode {} here but {}",
                                    mode.as_str(),
                                    other_mode.as_str()
                                ),
                                other: other_src.clone(),
                            },
                        ),
                        files: vec![(*other_file).to_owned(), (*name).to_owned()],
                    })
                }
                Some(_) => {}
                None => {
                    settings.insert(s.key.clone(), (name, mode, s.source.clone()));
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
                    settings: None,
                    functions: Vec::new(),
                })
                .functions
                .push(f.clone());
        }
    }

    for (key, chain) in desired.chains.iter_mut() {
        if let Some((_, mode, src)) = settings.get(key) {
            chain.xdp_mode = *mode;
            chain.settings = Some(src.clone());
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
