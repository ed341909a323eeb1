//! Byte-oriented maps: keys and values encoded from BTF have sizes known only
//! at run time, which aya's typed maps cannot express. Bulk reads and writes
//! go through `BPF_MAP_*_BATCH`, falling back to one call per element on
//! map types or kernels without batch support.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::sys::{self, MapInfo, SysError};
use crate::entries::EntrySet;

/// Errors of map operations, naming the map.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// Opening a pinned map failed.
    #[error("opening pinned map {path}: {source}")]
    Open {
        /// The pin path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: SysError,
    },
    /// The pin exists but holds another kind of object.
    #[error("{path} is pinned but is not a map")]
    NotAMap {
        /// The pin path.
        path: PathBuf,
    },
    /// A syscall on the map failed.
    #[error("map {map}: {source}")]
    Sys {
        /// The map's kernel name.
        map: String,
        /// The failure.
        #[source]
        source: SysError,
    },
    /// A batch write stopped part way.
    #[error("map {map}: wrote {written} of {total} entries, then: {source}")]
    Partial {
        /// The map's kernel name.
        map: String,
        /// Entries written before the failure.
        written: usize,
        /// Entries asked for.
        total: usize,
        /// The failure (E2BIG/ENOSPC when the map is full).
        #[source]
        source: SysError,
    },
    /// Reading the CPU count for a per-CPU map failed.
    #[error("sizing per-CPU values: {0}")]
    Cpus(#[source] std::io::Error),
}

/// One key of a per-CPU counter map, its u64 words summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummedEntry {
    /// The key bytes.
    pub key: Vec<u8>,
    /// The value's little-endian u64 words, each summed over all CPUs.
    pub sums: Vec<u64>,
}

/// Elements per batch syscall: large enough that syscall overhead vanishes,
/// small enough to bound the kernel's temporary buffers.
const BATCH: usize = 64 * 1024;

/// A map handle that speaks bytes.
#[derive(Debug)]
pub struct ByteMap {
    fd: OwnedFd,
    info: MapInfo,
    /// Bytes per value in syscalls: value_size, or round_up(value_size, 8) × possible CPUs.
    stride: usize,
    cpus: usize,
}

impl ByteMap {
    /// Wraps an open map fd.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, MapError> {
        let info = sys::map_info(fd.as_fd()).map_err(|source| MapError::Sys {
            map: "?".into(),
            source,
        })?;
        let (stride, cpus) = if is_per_cpu(info.map_type) {
            let cpus = sys::possible_cpus().map_err(MapError::Cpus)?;
            ((info.value_size as usize).div_ceil(8) * 8 * cpus, cpus)
        } else {
            (info.value_size as usize, 1)
        };
        Ok(Self {
            fd,
            info,
            stride,
            cpus,
        })
    }

    /// Opens a pinned map.
    pub fn from_pin(path: &Path) -> Result<Self, MapError> {
        let fd = sys::obj_get(path).map_err(|source| MapError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::from_fd(fd).map_err(|e| match e {
            MapError::Sys { source, .. } if source.errno() == Some(libc::EINVAL) => {
                MapError::NotAMap {
                    path: path.to_owned(),
                }
            }
            other => other,
        })
    }

    /// Creates a standalone map (inner maps of map-in-map swaps, metadata maps).
    pub fn create(
        spec: &sys::MapCreate<'_>,
        inner: Option<BorrowedFd<'_>>,
    ) -> Result<Self, MapError> {
        let fd = sys::map_create(spec, inner).map_err(|source| MapError::Sys {
            map: spec.name.to_owned(),
            source,
        })?;
        Self::from_fd(fd)
    }

    /// A second handle on the same map.
    pub fn try_clone(&self) -> Result<ByteMap, MapError> {
        let fd = self.fd.try_clone().map_err(|source| MapError::Sys {
            map: self.info.name.clone(),
            source: SysError {
                call: "dup",
                source,
            },
        })?;
        Ok(ByteMap {
            fd,
            info: self.info.clone(),
            stride: self.stride,
            cpus: self.cpus,
        })
    }

    /// The kernel's description of the map.
    pub fn info(&self) -> &MapInfo {
        &self.info
    }

    /// The map's fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Pins the map at `path`.
    pub fn pin(&self, path: &Path) -> Result<(), MapError> {
        sys::obj_pin(self.fd(), path).map_err(|e| self.err(e))
    }

    /// Whether the map keeps one value per CPU.
    pub fn is_per_cpu(&self) -> bool {
        is_per_cpu(self.info.map_type)
    }

    /// Whether elements cannot be deleted (arrays): "absent" is all-zero.
    pub fn is_array(&self) -> bool {
        is_array(self.info.map_type)
    }

    fn err(&self, source: SysError) -> MapError {
        MapError::Sys {
            map: self.info.name.clone(),
            source,
        }
    }

    /// The raw value of `key` as syscalls see it (all CPUs for per-CPU maps).
    pub fn lookup_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        let mut value = vec![0u8; self.stride];
        match sys::map_lookup(self.fd(), key, &mut value) {
            Ok(true) => Ok(Some(value)),
            Ok(false) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Per-CPU values of `key` (one slice per possible CPU), or the single value.
    pub fn lookup_per_cpu(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, MapError> {
        let vs = self.info.value_size as usize;
        Ok(self.lookup_raw(key)?.map(|raw| {
            if self.is_per_cpu() {
                raw.chunks(self.stride / self.cpus)
                    .map(|c| c[..vs].to_vec())
                    .collect()
            } else {
                vec![raw]
            }
        }))
    }

    /// Writes one element; per-CPU maps get the value on every CPU.
    pub fn update(&self, key: &[u8], value: &[u8]) -> Result<(), MapError> {
        let raw = self.expand(value);
        sys::map_update(self.fd(), key, &raw, 0).map_err(|e| self.err(e))
    }

    /// Writes `key` only if it is not there (`BPF_NOEXIST`): `Ok(false)`
    /// when it was, and nothing changed.
    pub fn insert_new(&self, key: &[u8], value: &[u8]) -> Result<bool, MapError> {
        let raw = self.expand(value);
        match sys::map_update(self.fd(), key, &raw, 1) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Writes a raw fd-sized value (prog arrays, map-in-map): the fd number.
    pub fn update_fd(&self, key: u32, fd: BorrowedFd<'_>) -> Result<(), MapError> {
        use std::os::fd::AsRawFd as _;
        let value = (fd.as_raw_fd() as u32).to_ne_bytes();
        sys::map_update(self.fd(), &key.to_ne_bytes(), &value, 0).map_err(|e| self.err(e))
    }

    /// Deletes one element (arrays: zeroes it). `Ok(false)` if it was absent.
    pub fn delete(&self, key: &[u8]) -> Result<bool, MapError> {
        if self.is_array() {
            self.update(key, &vec![0u8; self.info.value_size as usize])?;
            return Ok(true);
        }
        sys::map_delete(self.fd(), key).map_err(|e| self.err(e))
    }

    fn expand(&self, value: &[u8]) -> Vec<u8> {
        if !self.is_per_cpu() {
            return value.to_vec();
        }
        let per = self.stride / self.cpus;
        let mut raw = vec![0u8; self.stride];
        for chunk in raw.chunks_mut(per) {
            chunk[..value.len()].copy_from_slice(value);
        }
        raw
    }

    /// Reads every entry. Per-CPU maps report CPU 0's value (config maps are
    /// written identically on all CPUs; state maps are summed elsewhere).
    /// Arrays report their non-zero elements only.
    pub fn read_all(&self) -> Result<EntrySet, MapError> {
        let (keys, raw_values) = self.read_all_raw()?;
        let vs = self.info.value_size as usize;
        let values = if self.is_per_cpu() {
            raw_values
                .chunks(self.stride)
                .flat_map(|c| c[..vs].iter().copied())
                .collect()
        } else {
            raw_values
        };
        let set = EntrySet::from_unique(self.info.key_size as usize, vs, keys, values);
        Ok(if self.is_array() {
            set.without_zero_values()
        } else {
            set
        })
    }

    /// Reads every entry as packed keys and raw (all-CPU) values.
    pub fn read_all_raw(&self) -> Result<(Vec<u8>, Vec<u8>), MapError> {
        match self.read_batched() {
            Ok(kv) => Ok(kv),
            Err(e) if batch_unsupported(&e) => self.read_iterating(),
            Err(e) => Err(self.err(e)),
        }
    }

    fn read_batched(&self) -> Result<(Vec<u8>, Vec<u8>), SysError> {
        let ks = self.info.key_size as usize;
        let chunk = BATCH.min(self.info.max_entries.max(1) as usize);
        let mut keys = Vec::new();
        let mut values = Vec::new();
        let mut kbuf = vec![0u8; chunk * ks];
        let mut vbuf = vec![0u8; chunk * self.stride];
        // Hash maps resume from a bucket number, others from a key.
        let token_len = ks.max(8);
        let (mut token_in, mut token_out) = (vec![0u8; token_len], vec![0u8; token_len]);
        let mut first = true;
        loop {
            let (n, done) = sys::map_lookup_batch(
                self.fd(),
                (!first).then_some(&token_in[..]),
                &mut token_out,
                &mut kbuf,
                &mut vbuf,
                chunk as u32,
            )?;
            let n = n as usize;
            keys.extend_from_slice(&kbuf[..n * ks]);
            values.extend_from_slice(&vbuf[..n * self.stride]);
            if done {
                return Ok((keys, values));
            }
            std::mem::swap(&mut token_in, &mut token_out);
            first = false;
        }
    }

    fn read_iterating(&self) -> Result<(Vec<u8>, Vec<u8>), MapError> {
        let ks = self.info.key_size as usize;
        let mut keys = Vec::new();
        let mut values = Vec::new();
        let mut next = vec![0u8; ks];
        let mut prev: Option<Vec<u8>> = None;
        while sys::map_next_key(self.fd(), prev.as_deref(), &mut next).map_err(|e| self.err(e))? {
            // An element deleted between next_key and lookup is simply skipped.
            if let Some(v) = self.lookup_raw(&next)? {
                keys.extend_from_slice(&next);
                values.extend_from_slice(&v);
            }
            prev = Some(next.clone());
        }
        Ok((keys, values))
    }

    /// Writes all entries of `set` (values replicated per CPU for per-CPU maps).
    pub fn update_batch(&self, set: &EntrySet) -> Result<(), MapError> {
        let total = set.len();
        if total == 0 {
            return Ok(());
        }
        let ks = set.key_size();
        let vs = set.value_size();
        let per_cpu_values;
        let values: &[u8] = if self.is_per_cpu() {
            per_cpu_values = set
                .packed_values()
                .chunks(vs.max(1))
                .flat_map(|v| self.expand(&v[..vs]))
                .collect::<Vec<u8>>();
            &per_cpu_values
        } else {
            set.packed_values()
        };
        let mut done = 0;
        while done < total {
            let n = BATCH.min(total - done);
            let keys = &set.packed_keys()[done * ks..(done + n) * ks];
            let vals = &values[done * self.stride..(done + n) * self.stride];
            match sys::map_update_batch(self.fd(), keys, vals, n as u32, 0) {
                Ok(_) => done += n,
                Err((_, e)) if done == 0 && batch_unsupported(&e) => {
                    return self.update_each(set);
                }
                Err((written, source)) => {
                    return Err(MapError::Partial {
                        map: self.info.name.clone(),
                        written: done + written as usize,
                        total,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn update_each(&self, set: &EntrySet) -> Result<(), MapError> {
        for (i, (k, v)) in set.iter().enumerate() {
            sys::map_update(self.fd(), k, &self.expand(v), 0).map_err(|source| {
                MapError::Partial {
                    map: self.info.name.clone(),
                    written: i,
                    total: set.len(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Deletes packed keys (arrays: zeroes them). Keys already gone are fine.
    pub fn delete_batch(&self, keys: &[u8]) -> Result<(), MapError> {
        let ks = self.info.key_size as usize;
        let total = keys.len() / ks;
        if total == 0 {
            return Ok(());
        }
        if self.is_array() {
            let vs = self.info.value_size as usize;
            let zeros = EntrySet::from_unique(ks, vs, keys.to_vec(), vec![0u8; total * vs]);
            return self.update_batch(&zeros);
        }
        let mut done = 0;
        while done < total {
            let n = BATCH.min(total - done);
            match sys::map_delete_batch(self.fd(), &keys[done * ks..(done + n) * ks], n as u32) {
                Ok(_) => done += n,
                // ENOENT: a key vanished under us (hand-edited drift); finish one by one.
                Err((written, e)) if e.is_not_found() || batch_unsupported(&e) => {
                    for k in keys[(done + written as usize) * ks..(done + n) * ks].chunks_exact(ks)
                    {
                        sys::map_delete(self.fd(), k).map_err(|e| self.err(e))?;
                    }
                    done += n;
                }
                Err((written, source)) => {
                    return Err(MapError::Partial {
                        map: self.info.name.clone(),
                        written: done + written as usize,
                        total,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Sums a per-CPU map's values as little-endian u64 words, per key:
    /// how counters kept per CPU are read.
    pub fn read_summed_u64(&self) -> Result<Vec<SummedEntry>, MapError> {
        let (keys, values) = self.read_all_raw()?;
        let ks = self.info.key_size as usize;
        let words = self.info.value_size as usize / 8;
        let per = self.stride / self.cpus;
        let mut out = Vec::with_capacity(keys.len() / ks.max(1));
        for (k, raw) in keys.chunks_exact(ks).zip(values.chunks_exact(self.stride)) {
            let mut sums = vec![0u64; words];
            for cpu in raw.chunks_exact(per) {
                for (w, sum) in sums.iter_mut().enumerate() {
                    let b: [u8; 8] = cpu[w * 8..w * 8 + 8].try_into().expect("8 bytes");
                    *sum = sum.wrapping_add(u64::from_le_bytes(b));
                }
            }
            out.push(SummedEntry {
                key: k.to_vec(),
                sums,
            });
        }
        Ok(out)
    }

    /// For a map-in-map: the map in slot `index`, if the slot is filled.
    /// (A map-in-map read from user space yields the inner map's id.)
    pub fn inner(&self, index: u32) -> Result<Option<ByteMap>, MapError> {
        let Some(raw) = self.lookup_raw(&index.to_ne_bytes())? else {
            return Ok(None);
        };
        let id = u32::from_ne_bytes(
            raw.get(..4)
                .and_then(|b| b.try_into().ok())
                .unwrap_or_default(),
        );
        match sys::map_fd_by_id(id) {
            Ok(fd) => ByteMap::from_fd(fd).map(Some),
            // Freed between the lookup and the open: as good as empty.
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Counts entries (arrays: non-zero elements).
    pub fn count(&self) -> Result<usize, MapError> {
        if self.is_array() {
            return Ok(self.read_all()?.len());
        }
        let (keys, _) = self.read_all_raw()?;
        Ok(keys.len() / self.info.key_size.max(1) as usize)
    }
}

fn batch_unsupported(e: &SysError) -> bool {
    matches!(
        e.errno(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | sys::ENOTSUPP)
    )
}

pub use crate::model::map_type::{is_array, is_per_cpu};

/// Returns once every BPF program that may have read a map before this call
/// has finished. Updating a map-in-map makes the kernel wait for an RCU grace
/// period before returning (the kernel selftests use the same trick), which
/// is what "no packet still runs the old revision" needs.
pub fn wait_for_readers() -> Result<(), MapError> {
    use crate::model::map_type;
    use sys::MapCreate;
    let inner = ByteMap::create(
        &MapCreate {
            name: "kfd_sync_in",
            map_type: map_type::ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
        },
        None,
    )?;
    let outer = ByteMap::create(
        &MapCreate {
            name: "kfd_sync",
            map_type: map_type::ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
        },
        Some(inner.fd()),
    )?;
    outer.update_fd(0, inner.fd())
}
