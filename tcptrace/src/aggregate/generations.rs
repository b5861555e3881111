//! A map bounded by two generations: when the young one fills up, the
//! old one is forgotten and the young one ages. What was seen recently
//! survives; memory stays bounded by twice the generation size whatever
//! the churn.
//!
//! Under a connection storm every event looks a key up here, so each
//! operation hashes the key as few times as it can (one on a hit, two on
//! a miss) and an ageing reuses the forgotten generation's allocation
//! instead of growing a new table from empty.

use std::hash::Hash;

use rustc_hash::FxHashMap;

/// Keys and values in two generations of at most `capacity` each.
#[derive(Debug)]
pub struct Generations<K, V> {
    young: FxHashMap<K, V>,
    old: FxHashMap<K, V>,
    capacity: usize,
}

impl<K: Hash + Eq, V> Generations<K, V> {
    /// An empty map whose generations hold at most `capacity` keys.
    pub fn new(capacity: usize) -> Generations<K, V> {
        Generations {
            young: FxHashMap::default(),
            old: FxHashMap::default(),
            capacity,
        }
    }

    /// The value of `key`, young or old.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.young.get(key).or_else(|| self.old.get(key))
    }

    /// The value of `key`, young or old, to change in place (an old one
    /// stays old: only `entry` and `insert` make a key young again).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self.young.get_mut(key) {
            Some(value) => Some(value),
            None => self.old.get_mut(key),
        }
    }

    /// Whether `key` is held.
    pub fn contains_key(&self, key: &K) -> bool {
        self.young.contains_key(key) || self.old.contains_key(key)
    }

    /// The young value of `key`: an old one moves to the young
    /// generation, an unknown one is made by `new`.
    pub fn entry(&mut self, key: K, new: impl FnOnce() -> V) -> &mut V {
        self.make_room_for(&key);
        let old = &mut self.old;
        self.young
            .entry(key)
            .or_insert_with_key(|key| old.remove(key).unwrap_or_else(new))
    }

    /// Sets `key` to `value` in the young generation.
    pub fn insert(&mut self, key: K, value: V) {
        self.make_room_for(&key);
        self.old.remove(&key);
        self.young.insert(key, value);
    }

    /// Removes `key`, young or old.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.young.remove(key).or_else(|| self.old.remove(key))
    }

    /// Keys held, both generations.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Ages the young generation when it is full and `key` is not in it.
    /// Hashes `key` only then (once per generation).
    fn make_room_for(&mut self, key: &K) {
        if self.young.len() >= self.capacity && !self.young.contains_key(key) {
            std::mem::swap(&mut self.young, &mut self.old);
            self.young.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keys_survive_and_memory_is_bounded() {
        let mut g = Generations::new(4);
        for k in 0..4 {
            *g.entry(k, || 0) += k;
        }
        // Full: the fifth key ages the first four.
        g.insert(4, 40);
        assert_eq!(g.len(), 5);
        assert_eq!(g.get(&3), Some(&3));
        // Touching an old key makes it young again, value kept.
        *g.entry(1, || 99) += 10;
        assert_eq!(g.get(&1), Some(&11));
        for k in 5..8 {
            g.insert(k, k);
        }
        // Young {4, 1, 5, 6} filled and aged by 7: 0, 2 and 3 are gone.
        assert_eq!(g.get(&0), None);
        assert_eq!(g.get(&2), None);
        assert_eq!(g.get(&1), Some(&11));
        assert_eq!(g.get(&7), Some(&7));
        assert!(g.len() <= 8);
        for k in 0..10_000 {
            g.insert(k, k);
        }
        assert!(g.len() <= 8);
    }

    #[test]
    fn a_key_is_held_once_and_removed_from_either_generation() {
        let mut g = Generations::new(2);
        g.insert("a", 1);
        g.insert("b", 2);
        g.insert("c", 3); // ages a and b
        g.insert("a", 4); // a young again, not twice
        assert_eq!(g.len(), 3);
        assert_eq!(g.get(&"a"), Some(&4));
        assert_eq!(g.remove(&"b"), Some(2));
        assert_eq!(g.remove(&"a"), Some(4));
        assert_eq!(g.remove(&"a"), None);
        if let Some(v) = g.get_mut(&"c") {
            *v = 30;
        }
        assert_eq!(g.get(&"c"), Some(&30));
        assert!(g.contains_key(&"c"));
        assert!(!g.contains_key(&"b"));
    }
}
