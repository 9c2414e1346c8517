//! Verified tokens, so a token seen before costs no signature check.
//!
//! Entries are keyed by the SHA-256 of the token, so the cache never holds a
//! token. The map is split into shards, each behind its own `RwLock`, and a
//! lookup takes one shard's read lock: concurrent Checks do not wait on each
//! other unless one of them is inserting into the same shard.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use crate::identity::User;

/// Number of shards; a power of two.
const SHARDS: usize = 64;
/// Default bound on the number of entries.
pub const DEFAULT_MAX_ENTRIES: usize = 16_384;

/// SHA-256 of a token.
pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// A verified token's outcome.
#[derive(Debug, Clone)]
pub struct Entry {
    pub user: Arc<User>,
    /// `exp` in seconds since the Unix epoch; the entry is never returned at
    /// or after this time.
    pub expires_at: u64,
    /// The provider runtime that verified the token.
    pub provider: u64,
    /// The provider's key-set generation the token was verified with.
    pub generation: u64,
}

/// Hashes a key that already is a SHA-256 digest by taking 8 of its bytes,
/// which are uniform, so no second hash is computed.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length, then its bytes.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            let width = chunk.len().min(8);
            word[..width].copy_from_slice(&chunk[..width]);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
}

type Shard = HashMap<TokenDigest, Entry, BuildHasherDefault<DigestHasher>>;

/// A bounded, sharded map of verified tokens.
pub struct TokenCache {
    shards: Box<[RwLock<Shard>]>,
    per_shard: usize,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.len())
            .finish()
    }
}

impl TokenCache {
    pub fn new(max_entries: usize) -> Self {
        let per_shard = max_entries.div_ceil(SHARDS).max(1);
        TokenCache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            per_shard,
        }
    }

    fn shard(&self, key: &TokenDigest) -> &RwLock<Shard> {
        // The last byte is independent of the bytes the map hashes.
        let index = usize::from(key[31]) % SHARDS;
        &self.shards[index]
    }

    /// Returns the entry for `key` if it is still valid at `now` and passes
    /// `current`, which checks that its provider and key generation are still
    /// in use. A stale entry is removed.
    pub fn get(
        &self,
        key: &TokenDigest,
        now: u64,
        current: impl Fn(&Entry) -> bool,
    ) -> Option<Entry> {
        let shard = self.shard(key);
        {
            let map = shard
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let entry = map.get(key)?;
            if now < entry.expires_at && current(entry) {
                return Some(entry.clone());
            }
        }
        let mut map = shard
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.remove(key);
        None
    }

    /// Stores a verified token. When the shard is full, expired entries are
    /// dropped first, then the entry closest to expiry.
    pub fn insert(&self, key: TokenDigest, entry: Entry, now: u64) {
        let mut map = self
            .shard(&key)
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            map.retain(|_, e| now < e.expires_at);
            if map.len() >= self.per_shard
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.expires_at)
                    .map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        map.insert(key, entry);
    }

    /// Drops every entry of a provider runtime.
    pub fn remove_provider(&self, provider: u64) {
        for shard in self.shards.iter() {
            let mut map = shard
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            map.retain(|_, e| e.provider != provider);
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::ClaimMapping;

    fn entry(expires_at: u64, provider: u64) -> Entry {
        let claims = serde_json::json!({"sub": "alice"});
        Entry {
            user: Arc::new(User::from_claims(claims, &ClaimMapping::default())),
            expires_at,
            provider,
            generation: 1,
        }
    }

    #[test]
    fn cache_expired_entry_missing() {
        let cache = TokenCache::new(8);
        let key = digest("a.b.c");
        cache.insert(key, entry(100, 1), 50);
        assert!(cache.get(&key, 99, |_| true).is_some());
        assert!(cache.get(&key, 100, |_| true).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_stale_provider_missing() {
        let cache = TokenCache::new(8);
        let key = digest("a.b.c");
        cache.insert(key, entry(100, 1), 50);
        assert!(cache.get(&key, 60, |e| e.provider == 2).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_stays_bounded() {
        let cache = TokenCache::new(SHARDS * 2);
        for i in 0..10_000u64 {
            cache.insert(digest(&i.to_string()), entry(1_000 + i, 1), 10);
        }
        assert!(cache.len() <= SHARDS * 2);
    }

    #[test]
    fn cache_remove_provider() {
        let cache = TokenCache::new(64);
        cache.insert(digest("one"), entry(100, 1), 0);
        cache.insert(digest("two"), entry(100, 2), 0);
        cache.remove_provider(1);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&digest("two"), 1, |_| true).is_some());
    }
}
