//! Shared maps (`share:`): created and written before the chains whose
//! loads use them, removed after the chains that used them are gone.

use super::failpoint::hit;
use super::{ApplyError, map_err, open_map};
use crate::entries::EntrySet;
use crate::kernel::bpffs;
use crate::kernel::map::ByteMap;
use crate::kernel::sys::MapCreate;
use crate::layout::Layout;
use crate::plan::{SharedAction, SharedPlan};

/// What was done to one shared map.
#[derive(Debug)]
pub struct SharedReport {
    /// The share.
    pub name: String,
    /// Entries written.
    pub entries_written: usize,
    /// The failure, if any (the map is then as it was).
    pub error: Option<ApplyError>,
}

/// Whether an action runs before the chains (true) or after.
pub(super) fn before_chains(a: &SharedAction) -> bool {
    !matches!(a, SharedAction::Remove)
}

/// Runs the actions of `plan` that belong to one side of the chains.
pub(super) fn run(layout: &Layout, plan: &SharedPlan, before: bool) -> SharedReport {
    let mut report = SharedReport {
        name: plan.name.clone(),
        entries_written: 0,
        error: None,
    };
    if let Some(why) = &plan.blocked {
        if before {
            report.error = Some(ApplyError::Blocked {
                message: format!("shared map {}: {why}", plan.name),
            });
        }
        return report;
    }
    let path = layout.shared_map(&plan.name);
    for a in plan.actions.iter().filter(|a| before_chains(a) == before) {
        let done = match a {
            SharedAction::Create { shape, fill, .. } => {
                create(&path, &plan.name, shape, fill).map(|()| fill.len())
            }
            SharedAction::Entries { diff, .. } => open_map(&path).and_then(|m| {
                hit("before-map-write");
                m.update_batch(&diff.upserts)
                    .and_then(|()| m.delete_batch(&diff.deletes))
                    .map_err(|source| map_err(&path, source))?;
                hit("after-map-write");
                Ok(diff.write_count())
            }),
            SharedAction::Seed { entries, .. } => open_map(&path)
                .and_then(|m| seed(&m, entries).map_err(|source| map_err(&path, source))),
            SharedAction::Remove => {
                hit("before-unpin");
                let r = bpffs::unpin(&path).map_err(ApplyError::from).map(|()| 0);
                hit("after-unpin");
                bpffs::remove_dir_if_empty(&layout.shared_dir());
                r
            }
        };
        match done {
            Ok(n) => report.entries_written += n,
            Err(e) => {
                report.error = Some(e);
                break;
            }
        }
    }
    report
}

/// Creates the map, fills it, then pins it (so a pin is always a full map).
fn create(
    path: &std::path::Path,
    name: &str,
    shape: &crate::model::MapShape,
    fill: &EntrySet,
) -> Result<(), ApplyError> {
    let m = ByteMap::create(
        &MapCreate {
            name,
            map_type: shape.map_type,
            key_size: shape.key_size,
            value_size: shape.value_size,
            max_entries: shape.max_entries,
            map_flags: shape.map_flags,
        },
        None,
    )
    .map_err(|source| map_err(path, source))?;
    hit("before-map-write");
    m.update_batch(fill)
        .map_err(|source| map_err(path, source))?;
    hit("after-map-write");
    if let Some(dir) = path.parent() {
        bpffs::create_dir_all(dir)?;
    }
    hit("before-pin");
    m.pin(path).map_err(|source| map_err(path, source))?;
    hit("after-pin");
    Ok(())
}

/// Writes each seed entry whose key is still missing.
fn seed(m: &ByteMap, entries: &EntrySet) -> Result<usize, crate::kernel::MapError> {
    let mut written = 0;
    for (k, v) in entries.iter() {
        if m.insert_new(k, v)? {
            written += 1;
        }
    }
    Ok(written)
}
