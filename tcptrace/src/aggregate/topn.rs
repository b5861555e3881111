//! A map that keeps at most `capacity` entries: when full, the entry with
//! the least weight makes room. A port scan or a day of churn cannot grow
//! it; the heavy hitters, the ones a report shows, stay.

use std::hash::Hash;

use rustc_hash::FxHashMap;

/// How heavy an entry is: the lightest is evicted first.
pub trait Weight {
    /// The weight; higher is kept longer.
    fn weight(&self) -> u64;
}

/// A value kept apart (in a box) weighs what it does.
impl<T: Weight> Weight for Box<T> {
    fn weight(&self) -> u64 {
        (**self).weight()
    }
}

/// A map that keeps at most `capacity` entries, the heaviest by `Weight`: a port scan or a day-long run cannot grow it without limit.
#[derive(Debug, Clone)]
pub struct TopN<K, V> {
    capacity: usize,
    entries: FxHashMap<K, V>,
    evicted: u64,
}

impl<K: Hash + Eq + Clone, V: Weight> TopN<K, V> {
    /// An empty map of at most `capacity` entries.
    pub fn new(capacity: usize) -> TopN<K, V> {
        TopN {
            capacity: capacity.max(1),
            entries: FxHashMap::default(),
            evicted: 0,
        }
    }

    /// The entry for `key`, made with `make` (evicting the lightest
    /// entries first if the map is full).
    pub fn entry(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        // One hash for a key already kept while there is room (the usual
        // case); the full map checks first whether it must make room.
        if self.entries.len() >= self.capacity && !self.entries.contains_key(key) {
            self.evict();
        }
        self.entries.entry(key.clone()).or_insert_with(make)
    }

    /// Drops the lightest eighth of the entries at once: a scan of one-off
    /// keys (a port scan) then costs O(1) amortized per key, not a full
    /// pass over the map each.
    fn evict(&mut self) {
        let n = (self.capacity / 8).max(1);
        let mut weights: Vec<(u64, K)> = self
            .entries
            .iter()
            .map(|(k, v)| (v.weight(), k.clone()))
            .collect();
        weights.select_nth_unstable_by_key(n - 1, |(w, _)| *w);
        for (_, key) in weights.into_iter().take(n) {
            self.entries.remove(&key);
            self.evicted += 1;
        }
    }

    /// The entry for `key`, if kept.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    /// The entry for `key`, mutably, if kept.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key)
    }

    /// Every value kept, mutably, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.values_mut()
    }

    /// Every entry kept, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter()
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries dropped to stay within capacity.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Adds every entry of `other` into this map: `merge` folds one
    /// into an existing entry (or one made with `make`); the lightest
    /// make room as usual.
    pub fn merge_from(
        &mut self,
        other: &TopN<K, V>,
        make: impl Fn() -> V,
        merge: impl Fn(&mut V, &V),
    ) {
        for (key, value) in &other.entries {
            merge(self.entry(key, &make), value);
        }
        self.evicted += other.evicted;
    }

    /// Entries by descending weight (ties in key order of insertion are
    /// not stable, so callers that need a stable order sort further).
    pub fn ranked(&self) -> Vec<(&K, &V)> {
        let mut all: Vec<_> = self.entries.iter().collect();
        all.sort_by_key(|(_, v)| std::cmp::Reverse(v.weight()));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_lightest_and_stays_bounded() {
        let mut top: TopN<u32, u64> = TopN::new(3);
        *top.entry(&1, || 0) += 10;
        *top.entry(&2, || 0) += 5;
        *top.entry(&3, || 0) += 1;
        *top.entry(&4, || 0) += 7;
        assert_eq!(top.len(), 3);
        assert_eq!(top.evicted(), 1);
        assert!(top.get(&3).is_none(), "lightest entry evicted");
        // A scan of 10,000 one-off keys keeps the heavy hitters.
        let mut top: TopN<u32, u64> = TopN::new(64);
        for key in 0..8 {
            *top.entry(&key, || 0) += 100 + u64::from(key);
        }
        for key in 100..10_100 {
            *top.entry(&key, || 0) += 1;
        }
        assert!(top.len() <= 64);
        assert!((0..8).all(|k| top.get(&k).is_some()));
        assert_eq!(*top.ranked()[0].0, 7);
        assert_eq!(top.evicted() as usize, 8 + 10_000 - top.len());
    }
}
