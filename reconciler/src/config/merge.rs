//! Files → one desired state. Functions merge into chains keyed by
//! (netns, interface, hook); clashes between definitions name both places.

use std::collections::{BTreeMap, BTreeSet};

use super::error::{ConfigError, ErrorKind};
use super::resolve::FileDesired;
use super::yaml::Mark;
use crate::desired::{DesiredChain, DesiredShared, DesiredState, SharedUser};
use crate::model::{ChainKey, Hook, Source, TcAttach, XdpMode, limits};

/// A clash between files (or within one file's functions on a chain).
///
/// It is the fault of one of the files involved, which loses: which one is
/// the caller's call (the file that changed since it was applied), so the
/// error is ready for each of them, reported where that file is involved.
#[derive(Debug)]
pub struct Conflict {
    /// Per file involved (keys of the merge input, in merge order): the
    /// error to report when that file is the one blamed.
    pub by_file: Vec<(String, ConfigError)>,
}

impl Conflict {
    /// The files involved, in merge order.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.by_file.iter().map(|(f, _)| f.as_str())
    }

    /// The error to report when `file` is blamed (the last file's when
    /// `file` is not involved; the later place when it is involved twice).
    pub fn error_for(self, file: &str) -> ConfigError {
        let mut by_file = self.by_file;
        let at = by_file
            .iter()
            .rposition(|(f, _)| f == file)
            .unwrap_or(by_file.len().saturating_sub(1));
        by_file.swap_remove(at).1
    }
}

/// Gathers every function's `share:` into [`DesiredState::shared`]: one
/// shape for all users, entries and seed from one place each.
fn shared_maps(
    desired: &mut DesiredState,
    owner: &BTreeMap<(ChainKey, String), (&str, Source)>,
    conflicts: &mut Vec<Conflict>,
) {
    let file_of = |key: &ChainKey, f: &str| owner.get(&(key.clone(), f.to_owned())).map(|o| o.0);
    let mut shared: BTreeMap<String, (DesiredShared, Option<Source>, Option<Source>)> =
        BTreeMap::new();
    for (key, chain) in &desired.chains {
        for f in &chain.functions {
            for (map, sc) in &f.shares {
                let user = SharedUser {
                    chain: key.clone(),
                    function: f.name.clone(),
                    map: map.clone(),
                    source: sc.source.clone(),
                };
                let Some((s, entries_at, seed_at)) = shared.get_mut(&sc.share) else {
                    shared.insert(
                        sc.share.clone(),
                        (
                            DesiredShared {
                                shape: sc.shape,
                                inner: sc.inner,
                                users: vec![user],
                                entries: sc.entries.clone(),
                                seed: sc.seed.clone(),
                                format: sc.format.clone(),
                            },
                            sc.entries.as_ref().map(|_| sc.source.clone()),
                            (!sc.seed.is_empty()).then(|| sc.source.clone()),
                        ),
                    );
                    continue;
                };
                let first = s.users[0].clone();
                let clash = |detail: String, other: &Source| {
                    let mut files: BTreeSet<&str> = BTreeSet::new();
                    files.extend(file_of(key, &f.name));
                    files.extend(file_of(&first.chain, &first.function));
                    Conflict {
                        by_file: files
                            .into_iter()
                            .map(|file| {
                                (
                                    file.to_owned(),
                                    at(
                                        &sc.source,
                                        ErrorKind::SharedMap {
                                            share: sc.share.clone(),
                                            detail: detail.clone(),
                                            other: other.clone(),
                                        },
                                    ),
                                )
                            })
                            .collect(),
                    }
                };
                // One function on several interfaces is one place.
                let same_place = |at: &Option<Source>| at.as_ref() == Some(&sc.source);
                if let Some(m) = sc
                    .shape
                    .mismatch(&s.shape)
                    .or_else(|| (sc.inner != s.inner).then(|| "inner maps differ".to_owned()))
                {
                    conflicts.push(clash(
                        format!("map {map} of {} has another shape ({m})", f.name),
                        &first.source,
                    ));
                } else if let (Some(_), Some(other)) = (&sc.entries, entries_at.as_ref())
                    && !same_place(entries_at)
                {
                    conflicts.push(clash("its entries are given here and".into(), other));
                } else if let (false, Some(other)) = (sc.seed.is_empty(), seed_at.as_ref())
                    && !same_place(seed_at)
                {
                    conflicts.push(clash("its seed is given here and".into(), other));
                } else {
                    if sc.entries.is_some() && entries_at.is_none() {
                        s.entries = sc.entries.clone();
                        s.format = sc.format.clone();
                        *entries_at = Some(sc.source.clone());
                    }
                    if !sc.seed.is_empty() && seed_at.is_none() {
                        s.seed = sc.seed.clone();
                        s.format = sc.format.clone();
                        *seed_at = Some(sc.source.clone());
                    }
                    s.users.push(user);
                }
            }
        }
    }
    desired.shared = shared.into_iter().map(|(n, (s, _, _))| (n, s)).collect();
}

fn at(src: &Source, kind: ErrorKind) -> ConfigError {
    ConfigError::at(&src.file, Mark::new(src.line, src.col), kind)
}

/// Merges files (in the given order, which is lexical) into a desired state.
/// `files` pairs each file's key (its name in the config dir) with what it
/// defines. Functions whose object is unusable take part in every check
/// (they are still defined there) but are not in the result.
pub fn merge(files: &[(&str, &FileDesired)]) -> (DesiredState, Vec<Conflict>) {
    let mut desired = DesiredState::default();
    let mut conflicts = Vec::new();
    let mut owner: BTreeMap<(ChainKey, String), (&str, Source)> = BTreeMap::new();
    // Per chain and setting: (file, value as text, where).
    let mut settings: BTreeMap<(ChainKey, &'static str), (&str, String, Source)> = BTreeMap::new();
    // Per chain, every definition on it (usable or not): (priority, name, file, where).
    let mut defined: BTreeMap<ChainKey, Vec<(u32, String, &str, Source)>> = BTreeMap::new();

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
                        let clash = |here: &Source, mine: &str, there: &Source, theirs: &str| {
                            at(
                                here,
                                ErrorKind::ConflictingChain {
                                    chain: s.key.to_string(),
                                    detail: format!("{setting} {mine} here but {theirs}"),
                                    other: there.clone(),
                                },
                            )
                        };
                        conflicts.push(Conflict {
                            by_file: vec![
                                (
                                    (*other_file).to_owned(),
                                    clash(other_src, other, &s.source, &value),
                                ),
                                (
                                    (*name).to_owned(),
                                    clash(&s.source, &value, other_src, other),
                                ),
                            ],
                        })
                    }
                    Some(_) => {}
                    None => {
                        settings.insert((s.key.clone(), setting), (name, value, s.source.clone()));
                    }
                }
            }
        }
        let usable = fd
            .functions
            .iter()
            .map(|(k, f)| (k, f.name.as_str(), &f.source, f.priority, Some(f)));
        let unusable = fd
            .unusable
            .iter()
            .map(|(k, u)| (k, u.name.as_str(), &u.source, u.priority, None));
        for (key, fname, source, priority, function) in usable.chain(unusable) {
            let slot = (key.clone(), fname.to_owned());
            if let Some((other_file, other_src)) = owner.get(&slot) {
                let dup = |here: &Source, there: &Source| {
                    at(
                        here,
                        ErrorKind::DuplicateFunction {
                            name: fname.to_owned(),
                            chain: key.to_string(),
                            other: there.clone(),
                        },
                    )
                };
                conflicts.push(Conflict {
                    by_file: vec![
                        ((*other_file).to_owned(), dup(other_src, source)),
                        ((*name).to_owned(), dup(source, other_src)),
                    ],
                });
                continue;
            }
            owner.insert(slot, (name, source.clone()));
            defined.entry(key.clone()).or_default().push((
                priority,
                fname.to_owned(),
                name,
                source.clone(),
            ));
            if let Some(f) = function {
                desired
                    .chains
                    .entry(key.clone())
                    .or_insert_with(DesiredChain::empty)
                    .functions
                    .push(f.clone());
            }
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
        // The kernel lets a program tail-call only programs that handle
        // multi-buffer packets the way it does.
        if key.hook == Hook::Xdp {
            let frags = chain.functions.iter().find(|f| f.program.frags);
            let plain = chain.functions.iter().find(|f| !f.program.frags);
            match (frags, plain) {
                (Some(f), Some(p)) => {
                    let error = || {
                        at(
                            &f.source,
                            ErrorKind::MixedFrags {
                                chain: key.to_string(),
                                frags: f.name.clone(),
                                plain: p.name.clone(),
                                other: p.source.clone(),
                            },
                        )
                    };
                    let involved: BTreeSet<&str> = [&f.name, &p.name]
                        .into_iter()
                        .filter_map(|n| owner.get(&(key.clone(), n.clone())).map(|o| o.0))
                        .collect();
                    conflicts.push(Conflict {
                        by_file: involved
                            .into_iter()
                            .map(|n| (n.to_owned(), error()))
                            .collect(),
                    });
                }
                (Some(_), None) => chain.frags = true,
                _ => {}
            }
        }
        if let Some(pos) = chain.functions.iter().position(|f| !f.program.uses_abi)
            && let Some(next) = chain.functions.get(pos + 1)
        {
            let f = &chain.functions[pos];
            let error = || {
                at(
                    &f.source,
                    ErrorKind::NonAbiNotLast {
                        function: f.name.clone(),
                        chain: key.to_string(),
                        next: next.name.clone(),
                    },
                )
            };
            let involved: BTreeSet<&str> = [&f.name, &next.name]
                .into_iter()
                .filter_map(|n| owner.get(&(key.clone(), n.clone())).map(|o| o.0))
                .collect();
            conflicts.push(Conflict {
                by_file: involved
                    .into_iter()
                    .map(|n| (n.to_owned(), error()))
                    .collect(),
            });
        }
    }

    shared_maps(&mut desired, &owner, &mut conflicts);

    // Too many functions: every file on the chain is involved, and the
    // error for each is reported at its own first function there.
    for (key, defs) in &mut defined {
        if defs.len() <= limits::MAX_SLOTS {
            continue;
        }
        defs.sort();
        let count = defs.len();
        // Per file: where to point (its first function past the limit, else
        // its first one) and how many it defines here.
        let mut first_of: BTreeMap<&str, (&Source, usize)> = BTreeMap::new();
        for (_, _, file, source) in defs.iter() {
            first_of
                .entry(file)
                .and_modify(|e| e.1 += 1)
                .or_insert((source, 1));
        }
        let mut repointed = BTreeSet::new();
        for (_, _, file, source) in &defs[limits::MAX_SLOTS..] {
            if repointed.insert(*file)
                && let Some(e) = first_of.get_mut(file)
            {
                e.0 = source;
            }
        }
        conflicts.push(Conflict {
            by_file: first_of
                .into_iter()
                .map(|(file, (source, mine))| {
                    (
                        file.to_owned(),
                        at(
                            source,
                            ErrorKind::TooManyFunctions {
                                chain: key.to_string(),
                                count,
                                max: limits::MAX_SLOTS,
                                here: mine,
                            },
                        ),
                    )
                })
                .collect(),
        });
    }
    (desired, conflicts)
}
