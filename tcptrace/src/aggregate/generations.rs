//! A map bounded by two generations: when the young one fills up, the
//! old one is forgotten and the young one ages. What was seen recently
//! survives; memory stays bounded by twice the generation size whatever
//! the churn.
//!
//! Under a connection storm every event looks a key up here, so each
//! operation hashes its key once (`hashing::hash_of`), whichever
//! generations it probes (a `HashMap` would hash again for each: young,
//! old, then the insert), and an ageing reuses the forgotten generation's allocation instead of
//! growing a new table from empty.

use std::hash::Hash;

use hashbrown::HashTable;

use super::hashing::hash_of;

/// Keys and values in two generations of at most `capacity` each.
pub struct Generations<K, V> {
    young: HashTable<(K, V)>,
    old: HashTable<(K, V)>,
    capacity: usize,
}

impl<K, V> std::fmt::Debug for Generations<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generations")
            .field("young", &self.young.len())
            .field("old", &self.old.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Rehashes an entry when a table grows.
fn rehash<K: Hash, V>(entry: &(K, V)) -> u64 {
    hash_of(&entry.0)
}

impl<K: Hash + Eq, V> Generations<K, V> {
    /// An empty map whose generations hold at most `capacity` keys.
    pub fn new(capacity: usize) -> Generations<K, V> {
        Generations {
            young: HashTable::new(),
            old: HashTable::new(),
            capacity,
        }
    }

    /// The value of `key`, young or old.
    pub fn get(&self, key: &K) -> Option<&V> {
        let hash = hash_of(key);
        let eq = |e: &(K, V)| e.0 == *key;
        self.young
            .find(hash, eq)
            .or_else(|| self.old.find(hash, eq))
            .map(|(_, v)| v)
    }

    /// The value of `key`, young or old, to change in place (an old one
    /// stays old: only `entry` and `insert` make a key young again).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let hash = hash_of(key);
        let eq = |e: &(K, V)| e.0 == *key;
        match self.young.find_mut(hash, eq) {
            Some((_, value)) => Some(value),
            None => self.old.find_mut(hash, eq).map(|(_, v)| v),
        }
    }

    /// Whether `key` is held.
    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// The young value of `key`: an old one moves to the young
    /// generation, an unknown one is made by `new`.
    pub fn entry(&mut self, key: K, new: impl FnOnce() -> V) -> &mut V {
        let hash = hash_of(&key);
        // Not `HashTable::entry`: it makes room for one more key before it
        // looks, and a full generation would double for a key it holds.
        let young = match self.young.find_entry(hash, |e| e.0 == key) {
            Ok(found) => return &mut found.into_mut().1,
            Err(absent) => absent.into_table(),
        };
        if young.len() >= self.capacity {
            age(young, &mut self.old);
        }
        let value = match self.old.find_entry(hash, |e| e.0 == key) {
            Ok(found) => found.remove().0.1,
            Err(_) => new(),
        };
        &mut young.insert_unique(hash, (key, value), rehash).into_mut().1
    }

    /// Sets `key` to `value` in the young generation.
    pub fn insert(&mut self, key: K, value: V) {
        let hash = hash_of(&key);
        let young = match self.young.find_entry(hash, |e| e.0 == key) {
            Ok(mut found) => {
                found.get_mut().1 = value;
                return;
            }
            Err(absent) => absent.into_table(),
        };
        if young.len() >= self.capacity {
            age(young, &mut self.old);
        }
        if let Ok(found) = self.old.find_entry(hash, |e| e.0 == key) {
            found.remove();
        }
        young.insert_unique(hash, (key, value), rehash);
    }

    /// Removes `key`, young or old.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let hash = hash_of(key);
        let eq = |e: &(K, V)| e.0 == *key;
        match self.young.find_entry(hash, eq) {
            Ok(found) => Some(found.remove().0.1),
            Err(_) => self
                .old
                .find_entry(hash, eq)
                .ok()
                .map(|found| found.remove().0.1),
        }
    }

    /// Keys held, both generations.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// Forgets the old generation: the young one becomes old, and a new
/// young one starts in the old one's allocation.
fn age<T>(young: &mut HashTable<T>, old: &mut HashTable<T>) {
    std::mem::swap(young, old);
    young.clear();
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

    /// A full generation keeps its table when a key it holds is touched
    /// again: `HashTable::entry` makes room for one more key before it
    /// looks, so a generation filled to what its table holds (7/8 of the
    /// buckets) doubled at once, and both generations then kept the
    /// doubled tables.
    #[test]
    fn a_full_generation_does_not_grow() {
        let mut g = Generations::new(56); // 7/8 of 64 buckets
        for round in 0..4u32 {
            for k in round * 56..(round + 1) * 56 {
                g.insert(k, k);
            }
            let last = (round + 1) * 56 - 1;
            *g.entry(last, || 0) += 1;
            g.insert(last, 7);
            assert_eq!(g.get(&last), Some(&7));
        }
        assert_eq!((g.young.capacity(), g.old.capacity()), (56, 56));
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
