//! The hash of the aggregator's per-connection tables: FxHash, then
//! mixed with murmur3's finalizer, so every bit of a key (a port, a
//! socket address) reaches both the bits a `hashbrown` table picks its
//! bucket with and the top 7 it compares first (its tags). Fx alone is
//! a multiply and a rotate; the finalizer costs a few more multiplies
//! per key. Its own effect on CPU was not measured apart from the other
//! changes that came with it (one hash per `Generations` operation).
//! Only for tables that are looked up, never iterated into output: the
//! order of iteration changes with the hash.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, Hasher},
};

use rustc_hash::FxHasher;

/// Builds `MixHasher`s (no state: the same key always hashes the same).
#[derive(Debug, Clone, Copy, Default)]
pub struct MixBuildHasher;

impl BuildHasher for MixBuildHasher {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher(FxHasher::default())
    }
}

/// FxHash whose `finish` mixes every bit into the top ones.
#[derive(Default)]
pub struct MixHasher(FxHasher);

impl Hasher for MixHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0.write_u8(i);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.0.write_u16(i);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.0.write_u32(i);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0.write_u64(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.0.write_usize(i);
    }
    #[inline]
    fn finish(&self) -> u64 {
        mix(self.0.finish())
    }
}

/// murmur3's 64-bit finalizer: every input bit reaches every output bit.
#[inline]
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The hash of `key`, once for every probe of an operation.
#[inline]
pub fn hash_of<K: Hash + ?Sized>(key: &K) -> u64 {
    MixBuildHasher.hash_one(key)
}

/// A `HashMap` with this hash (see the module doc for when to use it).
pub type MixHashMap<K, V> = HashMap<K, V, MixBuildHasher>;

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    /// Loopback flows that differ only in their client port spread over
    /// the top 7 bits (the table's tags).
    #[test]
    fn ports_reach_the_top_bits() {
        let server: SocketAddr = "127.0.0.1:7777".parse().unwrap();
        let tags: std::collections::BTreeSet<u64> = (1024..2048u16)
            .map(|port| hash_of(&(SocketAddr::new(server.ip(), port), server)) >> 57)
            .collect();
        assert!(tags.len() > 100, "{} distinct tags of 128", tags.len());
    }
}
