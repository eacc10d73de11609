//! The pre-signed response cache (RFC 5019 §2.1.1, RFC 6960 §4.2.2.1: responses
//! to requests without nonce may be pre-produced).
//!
//! Keyed by the requested CertIDs' DER ([`ca::ocsp::OcspRequest::cache_key`]), so
//! a GET and a POST for the same certificate share an entry. An entry is used only
//! while
//! 1. now < `valid_until` = min(thisUpdate + max-age, nextUpdate − margin), and
//! 2. [`StatusTable::is_fresh`]: no serial it answers for changed since the
//!    status generation it was signed at (a revocation makes it stale at once),
//!    and no new material or full reload happened since.
//!
//! Memory is bounded: [`SHARDS`] shards of at most `capacity / SHARDS` entries
//! each; a full shard first drops expired entries, then an arbitrary one.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use hyper::header::HeaderValue;

use crate::state::{SerialKey, StatusTable};

/// Number of independently locked shards.
pub const SHARDS: usize = 16;

/// A signed response ready to send again.
#[derive(Debug)]
pub struct CachedResponse {
    /// The DER OCSPResponse.
    pub der: Bytes,
    /// `ETag` value (quoted).
    pub etag: HeaderValue,
    /// `Last-Modified` (thisUpdate).
    pub last_modified: HeaderValue,
    /// `Expires` (nextUpdate).
    pub expires: HeaderValue,
    /// Unix seconds after which the entry must not be used.
    pub valid_until: u64,
    /// Serials the response answers for.
    pub serials: Vec<SerialKey>,
    /// Status generation the response was built at.
    pub generation: u64,
    /// `cert_status` metric label.
    pub cert_status: &'static str,
}

type Shard = Mutex<HashMap<Box<[u8]>, Arc<CachedResponse>>>;

/// The response cache.
#[derive(Debug)]
pub struct ResponseCache {
    shards: Vec<Shard>,
    per_shard: usize,
    hasher: RandomState,
}

impl ResponseCache {
    /// A cache of at most `capacity` entries (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        ResponseCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[i]
    }

    /// The entry for `key`, if it is still valid at `now_secs` and still tells
    /// the truth according to `table`. An invalid entry is removed.
    pub fn get(
        &self,
        key: &[u8],
        now_secs: u64,
        table: &StatusTable,
    ) -> Option<Arc<CachedResponse>> {
        if self.per_shard == 0 {
            return None;
        }
        let shard = self.shard(key);
        let entry = shard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()?;
        if now_secs < entry.valid_until && table.is_fresh(&entry.serials, entry.generation) {
            return Some(entry);
        }
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(key).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
            map.remove(key);
        }
        None
    }

    /// Store `entry` under `key`.
    pub fn insert(&self, key: &[u8], entry: Arc<CachedResponse>, now_secs: u64) {
        if self.per_shard == 0 {
            return;
        }
        let mut map = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.per_shard && !map.contains_key(key) {
            map.retain(|_, e| now_secs < e.valid_until);
            if map.len() >= self.per_shard
                && let Some(victim) = map.keys().next().cloned()
            {
                map.remove(&victim);
            }
        }
        map.insert(key.into(), entry);
    }

    /// Number of entries (valid or not yet evicted).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn entry(valid_until: u64, generation: u64) -> Arc<CachedResponse> {
        let v = HeaderValue::from_static("x");
        Arc::new(CachedResponse {
            der: Bytes::from_static(b"der"),
            etag: v.clone(),
            last_modified: v.clone(),
            expires: v,
            valid_until,
            serials: Vec::new(),
            generation,
            cert_status: "good",
        })
    }

    #[test]
    fn expiry_staleness_and_bound() {
        let table = StatusTable::default();
        let g = table.generation();
        let c = ResponseCache::new(SHARDS * 2);
        c.insert(b"a", entry(100, g), 10);
        assert!(c.get(b"a", 99, &table).is_some());
        assert!(c.get(b"a", 100, &table).is_none(), "expired");
        assert!(c.is_empty(), "expired entry removed");
        c.insert(b"a", entry(100, g), 10);
        table.invalidate_all();
        assert!(c.get(b"a", 10, &table).is_none(), "stale");
        for i in 0..1000u32 {
            c.insert(&i.to_be_bytes(), entry(100, table.generation()), 10);
        }
        assert!(c.len() <= SHARDS * 2);
        assert!(ResponseCache::new(0).get(b"a", 0, &table).is_none());
    }
}
