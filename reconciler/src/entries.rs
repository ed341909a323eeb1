//! Map contents as plain data: fixed-size keys and values packed in two
//! buffers, sorted by key. Desired state, observed state and the planner all
//! speak this type; packing keeps 1,000,000 entries at a few allocations.

use std::cmp::Ordering;

/// A set of map entries, sorted by key bytes, keys unique.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct EntrySet {
    key_size: usize,
    value_size: usize,
    keys: Vec<u8>,
    values: Vec<u8>,
}

impl std::fmt::Debug for EntrySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_map();
        for (k, v) in self.iter().take(16) {
            list.entry(&hex(k), &hex(v));
        }
        list.finish()?;
        if self.len() > 16 {
            write!(f, " (+{} more)", self.len() - 16)?;
        }
        Ok(())
    }
}

/// Lower-case hex of some bytes, for messages and debug output.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Two entries with the same key: their positions in the unsorted input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Index of the first occurrence in the input.
    pub first: usize,
    /// Index of the later occurrence.
    pub second: usize,
    /// The key, packed.
    pub key: Vec<u8>,
}

/// What it takes to go from an observed set to a desired one.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct EntryDiff {
    /// Entries to write: missing from observed, or with a different value.
    pub upserts: EntrySet,
    /// Of the upserts, how many were missing (the rest changed value).
    pub added: usize,
    /// Keys to delete (present in observed only), packed.
    pub deletes: Vec<u8>,
}

impl EntryDiff {
    /// Number of keys to delete.
    pub fn delete_count(&self) -> usize {
        self.deletes
            .len()
            .checked_div(self.upserts.key_size)
            .unwrap_or(0)
    }

    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }

    /// Upserts plus deletes: the number of kernel writes the diff costs.
    pub fn write_count(&self) -> usize {
        self.upserts.len() + self.delete_count()
    }
}

impl EntrySet {
    /// An empty set for the given sizes.
    pub fn new(key_size: usize, value_size: usize) -> Self {
        Self {
            key_size,
            value_size,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Builds a set from packed, unsorted keys and values. Fails on the first
    /// duplicate key, reporting both input positions (in input order).
    ///
    /// # Panics
    /// If the buffers are not whole multiples of the sizes, or disagree in count.
    pub fn from_unsorted(
        key_size: usize,
        value_size: usize,
        keys: Vec<u8>,
        values: Vec<u8>,
    ) -> Result<Self, DuplicateKey> {
        let Some(order) = Self::sort_order(key_size, value_size, &keys, &values) else {
            return Ok(Self {
                key_size,
                value_size,
                keys,
                values,
            });
        };
        let key = |i: u32| &keys[i as usize * key_size..(i as usize + 1) * key_size];
        if let Some(w) = order.windows(2).find(|w| key(w[0]) == key(w[1])) {
            return Err(DuplicateKey {
                first: w[0] as usize,
                second: w[1] as usize,
                key: key(w[0]).to_vec(),
            });
        }
        Ok(Self::permuted(
            key_size,
            value_size,
            &keys,
            &values,
            order.into_iter(),
        ))
    }

    /// Like [`EntrySet::from_unsorted`] for input whose keys are unique by
    /// construction (a kernel map); should a duplicate appear, the last wins.
    pub fn from_unique(key_size: usize, value_size: usize, keys: Vec<u8>, values: Vec<u8>) -> Self {
        let Some(order) = Self::sort_order(key_size, value_size, &keys, &values) else {
            return Self {
                key_size,
                value_size,
                keys,
                values,
            };
        };
        let key = |i: u32| &keys[i as usize * key_size..(i as usize + 1) * key_size];
        let last_of_each = order
            .iter()
            .enumerate()
            .filter(|(pos, i)| order.get(pos + 1).is_none_or(|next| key(*next) != key(**i)))
            .map(|(_, i)| *i);
        Self::permuted(key_size, value_size, &keys, &values, last_of_each)
    }

    /// None when the keys are already strictly ascending (the common case for
    /// generated configs and kernel batch reads); else a stable sort order.
    ///
    /// # Panics
    /// If the buffers are not whole multiples of the sizes, or disagree in count.
    fn sort_order(
        key_size: usize,
        value_size: usize,
        keys: &[u8],
        values: &[u8],
    ) -> Option<Vec<u32>> {
        assert!(key_size > 0, "maps have keys");
        assert_eq!(keys.len() % key_size, 0, "keys are whole");
        let n = keys.len() / key_size;
        assert_eq!(values.len(), n * value_size, "one value per key");
        let key = |i: usize| &keys[i * key_size..(i + 1) * key_size];
        if (1..n).all(|i| key(i - 1) < key(i)) {
            return None;
        }
        let mut order: Vec<u32> = (0..n as u32).collect();
        // Stable, so equal keys stay in input order.
        order.sort_by(|&a, &b| key(a as usize).cmp(key(b as usize)));
        Some(order)
    }

    fn permuted(
        key_size: usize,
        value_size: usize,
        keys: &[u8],
        values: &[u8],
        order: impl Iterator<Item = u32>,
    ) -> Self {
        let mut out = Self {
            key_size,
            value_size,
            keys: Vec::with_capacity(keys.len()),
            values: Vec::with_capacity(values.len()),
        };
        for i in order {
            let i = i as usize;
            out.keys
                .extend_from_slice(&keys[i * key_size..(i + 1) * key_size]);
            out.values
                .extend_from_slice(&values[i * value_size..(i + 1) * value_size]);
        }
        out
    }

    /// Inserts or replaces one entry (O(n); for small sets and tests).
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        assert_eq!(key.len(), self.key_size, "key size");
        assert_eq!(value.len(), self.value_size, "value size");
        match self.search(key) {
            Ok(i) => {
                self.values[i * self.value_size..(i + 1) * self.value_size].copy_from_slice(value)
            }
            Err(i) => {
                self.keys
                    .splice(i * self.key_size..i * self.key_size, key.iter().copied());
                self.values.splice(
                    i * self.value_size..i * self.value_size,
                    value.iter().copied(),
                );
            }
        }
    }

    fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(key) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Key size in bytes.
    pub fn key_size(&self) -> usize {
        self.key_size
    }

    /// Value size in bytes.
    pub fn value_size(&self) -> usize {
        self.value_size
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.keys.len().checked_div(self.key_size).unwrap_or(0)
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The i-th key in sort order.
    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys[i * self.key_size..(i + 1) * self.key_size]
    }

    /// The i-th value in key order.
    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[i * self.value_size..(i + 1) * self.value_size]
    }

    /// The value for `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.search(key).ok().map(|i| self.value(i))
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.len()).map(|i| (self.key(i), self.value(i)))
    }

    /// All keys, packed.
    pub fn packed_keys(&self) -> &[u8] {
        &self.keys
    }

    /// All values, packed, in key order.
    pub fn packed_values(&self) -> &[u8] {
        &self.values
    }

    /// Entries whose value is not all zero bytes. Array maps cannot delete,
    /// so an all-zero element is how an array says "absent".
    pub fn without_zero_values(&self) -> Self {
        let mut out = Self::new(self.key_size, self.value_size);
        for (k, v) in self.iter() {
            if v.iter().any(|b| *b != 0) {
                out.keys.extend_from_slice(k);
                out.values.extend_from_slice(v);
            }
        }
        out
    }

    /// These entries but those whose key `other` holds.
    pub fn without_keys_of(&self, other: &EntrySet) -> Self {
        if other.is_empty() {
            return self.clone();
        }
        let mut out = Self::new(self.key_size, self.value_size);
        for (k, v) in self.iter() {
            if other.get(k).is_none() {
                out.keys.extend_from_slice(k);
                out.values.extend_from_slice(v);
            }
        }
        out
    }

    /// The entries of `self` whose key `observed` lacks (what a seed still
    /// has to write).
    pub fn missing_from(&self, observed: &EntrySet) -> Self {
        let mut out = Self::new(self.key_size, self.value_size);
        for (k, v) in self.iter() {
            if observed.get(k).is_none() {
                out.keys.extend_from_slice(k);
                out.values.extend_from_slice(v);
            }
        }
        out
    }

    /// The writes that turn `observed` into `self`: upserts for missing or
    /// changed entries, deletes for extra keys. Both sets are sorted, so this
    /// is one merge walk.
    pub fn diff_from(&self, observed: &EntrySet) -> EntryDiff {
        debug_assert_eq!(self.key_size, observed.key_size);
        let mut upserts = EntrySet::new(self.key_size, self.value_size);
        let mut deletes = Vec::new();
        let mut added = 0;
        let (mut i, mut j) = (0, 0);
        let (n, m) = (self.len(), observed.len());
        while i < n || j < m {
            let ord = match (i < n, j < m) {
                (true, true) => self.key(i).cmp(observed.key(j)),
                (true, false) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match ord {
                Ordering::Less => {
                    upserts.keys.extend_from_slice(self.key(i));
                    upserts.values.extend_from_slice(self.value(i));
                    added += 1;
                    i += 1;
                }
                Ordering::Greater => {
                    deletes.extend_from_slice(observed.key(j));
                    j += 1;
                }
                Ordering::Equal => {
                    if self.value(i) != observed.value(j) {
                        upserts.keys.extend_from_slice(self.key(i));
                        upserts.values.extend_from_slice(self.value(i));
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        EntryDiff {
            upserts,
            added,
            deletes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(pairs: &[(u8, u8)]) -> EntrySet {
        let keys = pairs.iter().map(|p| p.0).collect();
        let values = pairs.iter().map(|p| p.1).collect();
        EntrySet::from_unsorted(1, 1, keys, values).expect("unique")
    }

    #[test]
    fn sorts_and_finds() {
        let s = set(&[(3, 30), (1, 10), (2, 20)]);
        assert_eq!(s.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(s.get(&[2]), Some(&[20u8][..]));
        assert_eq!(s.get(&[4]), None);
    }

    #[test]
    fn reports_duplicates_in_input_order() {
        let err = EntrySet::from_unsorted(1, 1, vec![5, 1, 5], vec![0, 0, 0]).unwrap_err();
        assert_eq!(
            err,
            DuplicateKey {
                first: 0,
                second: 2,
                key: vec![5]
            }
        );
    }

    #[test]
    fn diff_upserts_changes_and_deletes_extras() {
        let desired = set(&[(1, 10), (2, 21), (4, 40)]);
        let observed = set(&[(1, 10), (2, 20), (3, 30)]);
        let d = desired.diff_from(&observed);
        assert_eq!(d.upserts, set(&[(2, 21), (4, 40)]));
        assert_eq!(d.added, 1);
        assert_eq!(d.deletes, vec![3]);
        assert!(desired.diff_from(&desired).is_empty());
    }

    proptest! {
        #[test]
        fn applying_a_diff_yields_the_desired_set(
            desired in proptest::collection::btree_map(any::<u8>(), any::<u8>(), 0..40),
            observed in proptest::collection::btree_map(any::<u8>(), any::<u8>(), 0..40),
        ) {
            let d: Vec<_> = desired.into_iter().collect();
            let o: Vec<_> = observed.into_iter().collect();
            let (desired, mut observed) = (set(&d), set(&o));
            let diff = desired.diff_from(&observed);
            for (k, v) in diff.upserts.iter() {
                observed.insert(k, v);
            }
            for k in diff.deletes.chunks(1) {
                let i = observed.search(k).expect("deleted keys exist");
                observed.keys.remove(i);
                observed.values.remove(i);
            }
            prop_assert_eq!(observed, desired);
        }
    }
}
