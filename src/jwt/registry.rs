//! The long-lived verifier the server owns.
//!
//! Bundles are replaced often; key fetchers and verified tokens should not
//! be. Provider runtimes are therefore kept here, keyed by their settings,
//! and a new bundle whose provider settings are unchanged reuses them: its
//! keys are not refetched and its cached tokens stay valid.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use super::cache::{self, Entry, TokenCache};
use super::error::TokenError;
use super::extract::{Extracted, extract};
use super::keys::{KeyStatus, KeyStore};
use super::provider::{JwksSource, Provider, Providers, RemoteJwks};
use super::verify;
use crate::engine::UserSource;
use crate::policy::Bundle;
use crate::request::Headers;

/// A provider with its live keys. `id` names the runtime in cache entries.
#[derive(Debug)]
pub struct BoundProvider {
    pub id: u64,
    pub config: Arc<Provider>,
    pub keys: Arc<KeyStore>,
}

/// A bundle's providers bound to their runtimes.
#[derive(Debug)]
pub struct Binding {
    pub providers: Arc<Providers>,
    /// Same order as `providers.providers`.
    bound: Vec<Arc<BoundProvider>>,
}

impl Binding {
    /// The bound providers that read the location with index `location`.
    pub fn providers_at(&self, location: usize) -> impl Iterator<Item = &Arc<BoundProvider>> {
        self.providers
            .locations
            .get(location)
            .map(|l| l.providers.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|index| self.bound.get(*index))
    }
}

/// The user of a request as far as tokens tell.
#[derive(Debug, Default)]
pub struct Authentication {
    pub user: UserSource,
    /// The provider that verified the token, if one did.
    provider: Option<Arc<BoundProvider>>,
    /// The token was found in the verified-token cache.
    pub cache_hit: bool,
}

impl Authentication {
    /// Request headers to remove before the request goes upstream.
    pub fn remove_headers(&self) -> &[String] {
        self.provider
            .as_ref()
            .map_or(&[], |p| p.config.remove_headers.as_slice())
    }

    fn rejected(error: TokenError) -> Self {
        Authentication {
            user: UserSource::Rejected(error),
            provider: None,
            cache_hit: false,
        }
    }
}

#[derive(Default)]
struct Registry {
    runtimes: HashMap<[u8; 32], Weak<BoundProvider>>,
    remote_keys: HashMap<RemoteJwks, Weak<KeyStore>>,
}

/// Verifies bearer tokens for every bundle the server runs.
pub struct JwtVerifier {
    cache: TokenCache,
    /// The newest binding first, then the one before it, so a Check still
    /// running on the previous bundle does not rebind.
    bindings: ArcSwap<Vec<Arc<Binding>>>,
    /// Taken only to bind a bundle not seen before.
    registry: Mutex<Registry>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Default for JwtVerifier {
    fn default() -> Self {
        JwtVerifier::new(cache::DEFAULT_MAX_ENTRIES)
    }
}

impl JwtVerifier {
    /// Creates a verifier whose cache holds at most `max_cached_tokens`.
    pub fn new(max_cached_tokens: usize) -> Self {
        JwtVerifier {
            cache: TokenCache::new(max_cached_tokens),
            bindings: ArcSwap::from_pointee(Vec::new()),
            registry: Mutex::new(Registry::default()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Binds a bundle's providers to their runtimes, starting fetchers for
    /// remote key sets not yet known. Call it before activating a bundle so
    /// its keys are being fetched by the time traffic arrives; a Check on an
    /// unbound bundle binds it itself.
    pub fn prepare(&self, bundle: &Bundle) {
        if !bundle.jwt.is_empty() {
            self.binding(&bundle.jwt);
        }
    }

    /// Finds and verifies the request's token. No token means anonymous; a
    /// token that fails any check means `UserSource::Rejected`.
    pub fn authenticate(&self, bundle: &Bundle, check: &CheckRequest) -> Authentication {
        if bundle.jwt.is_empty() {
            return Authentication::default();
        }
        let Some(http) = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
        else {
            return Authentication::default();
        };
        let headers = Headers::from_http(http);
        let binding = self.binding(&bundle.jwt);

        let mut found = None;
        for (index, location) in binding.providers.locations.iter().enumerate() {
            let Some(value) = headers.get(&location.source.header) else {
                continue;
            };
            let scheme = location.source.scheme.as_deref();
            match extract(&value, scheme, location.max_token_bytes) {
                Ok(Extracted::Absent) => {}
                Ok(Extracted::Token(_)) if found.is_some() => {
                    return Authentication::rejected(TokenError::MultipleTokens);
                }
                Ok(Extracted::Token(token)) => {
                    // The token's place in the value, so the value can be
                    // kept past this iteration without scanning it again.
                    let start = token.as_ptr() as usize - value.as_ptr() as usize;
                    found = Some((index, value.clone(), start..start + token.len()));
                }
                Err(error) => return Authentication::rejected(error),
            }
        }
        let Some((location, value, range)) = found else {
            return Authentication::default();
        };
        let Some(token) = value.get(range) else {
            return Authentication::rejected(TokenError::MalformedToken);
        };

        match self.verify(&binding, location, token) {
            Ok((user, provider, cache_hit)) => Authentication {
                user: UserSource::Verified(user),
                provider: Some(provider),
                cache_hit,
            },
            Err(error) => Authentication::rejected(error),
        }
    }

    /// Verifies a token read from `location`, from the cache when it can.
    fn verify(
        &self,
        binding: &Binding,
        location: usize,
        token: &str,
    ) -> Result<(Arc<crate::identity::User>, Arc<BoundProvider>, bool), TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let key = cache::digest(token);
        let current = |entry: &Entry| {
            binding
                .providers_at(location)
                .any(|b| b.id == entry.provider && b.keys.generation() == entry.generation)
        };
        if let Some(entry) = self.cache.get(&key, now, current)
            && let Some(provider) = binding
                .providers_at(location)
                .find(|b| b.id == entry.provider)
        {
            return Ok((entry.user, provider.clone(), true));
        }

        let verified = verify::verify(token, binding, location, now)?;
        if verified.expires_at > now {
            let entry = Entry {
                user: verified.user.clone(),
                expires_at: verified.expires_at,
                provider: verified.provider.id,
                generation: verified.generation,
            };
            self.cache.insert(key, entry, now);
        }
        Ok((verified.user, verified.provider, false))
    }

    /// Returns the binding of `providers`, creating it on first use.
    fn binding(&self, providers: &Arc<Providers>) -> Arc<Binding> {
        if let Some(binding) = self.find_binding(providers) {
            return binding;
        }

        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Another Check may have bound the same bundle while this one waited.
        if let Some(binding) = self.find_binding(providers) {
            return binding;
        }

        let bound: Vec<Arc<BoundProvider>> = providers
            .providers
            .iter()
            .map(|provider| self.runtime(&mut registry, provider))
            .collect();
        let binding = Arc::new(Binding {
            providers: providers.clone(),
            bound,
        });

        let previous = self.bindings.load_full();
        let mut kept = vec![binding.clone()];
        kept.extend(previous.first().cloned());
        let in_use = |id: u64| kept.iter().any(|b| b.bound.iter().any(|p| p.id == id));
        for retired in previous.iter().flat_map(|b| b.bound.iter()) {
            if !in_use(retired.id) {
                self.cache.remove_provider(retired.id);
            }
        }
        self.bindings.store(Arc::new(kept));

        registry
            .runtimes
            .retain(|_, runtime| runtime.strong_count() > 0);
        registry
            .remote_keys
            .retain(|_, keys| keys.strong_count() > 0);
        binding
    }

    fn find_binding(&self, providers: &Arc<Providers>) -> Option<Arc<Binding>> {
        self.bindings
            .load()
            .iter()
            .find(|b| Arc::ptr_eq(&b.providers, providers))
            .cloned()
    }

    /// Returns the runtime for a provider's settings, reusing a live one.
    fn runtime(&self, registry: &mut Registry, provider: &Arc<Provider>) -> Arc<BoundProvider> {
        if let Some(runtime) = registry
            .runtimes
            .get(&provider.settings_digest)
            .and_then(Weak::upgrade)
        {
            return runtime;
        }

        let keys = match &provider.jwks {
            JwksSource::Static(_) => KeyStore::start(&provider.jwks),
            JwksSource::Remote(remote) => {
                match registry.remote_keys.get(remote).and_then(Weak::upgrade) {
                    Some(keys) => keys,
                    None => {
                        let keys = KeyStore::start(&provider.jwks);
                        registry
                            .remote_keys
                            .insert(remote.clone(), Arc::downgrade(&keys));
                        keys
                    }
                }
            }
        };
        let runtime = Arc::new(BoundProvider {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            config: provider.clone(),
            keys,
        });
        registry
            .runtimes
            .insert(provider.settings_digest, Arc::downgrade(&runtime));
        runtime
    }

    /// Fetch status of every key set in use, newest binding first.
    pub fn key_status(&self) -> Vec<KeyStatus> {
        let bindings = self.bindings.load();
        let mut seen: Vec<*const KeyStore> = Vec::new();
        let mut statuses = Vec::new();
        for provider in bindings.iter().flat_map(|b| b.bound.iter()) {
            let pointer = Arc::as_ptr(&provider.keys);
            if !seen.contains(&pointer) {
                seen.push(pointer);
                statuses.push(provider.keys.status());
            }
        }
        statuses
    }

    /// Number of verified tokens cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }
}
