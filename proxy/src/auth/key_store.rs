//! A route's verification keys: the issuer's key set (JWKS), read from a file or fetched over
//! HTTPS, kept while the issuer is down, fetched again every `jwks_refresh` and when a token
//! names a key the set lacks (at most once per [`MIN_REFETCH`]: a stream of tokens with made-up
//! `kid`s costs the issuer one request per interval, not one per token).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mcp_edge_policies::auth::KeySet;
use mcp_edge_policies::config::KeySource;

/// Key sets larger than this are refused unread (a real one is a few KiB).
const MAX_DOCUMENT: usize = 256 * 1024;
/// The shortest time between two fetches asked for by unknown `kid`s.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon a failed fetch is tried again by the refresher.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// The keys in use, and which set they are.
pub struct Keys {
    pub set: KeySet,
    /// Changes whenever the set's document does (tokens verified under another are checked
    /// again); 0 while no set was ever read.
    pub generation: u64,
}

pub struct KeyStore {
    pub source: KeySource,
    current: ArcSwap<Keys>,
    /// SHA-256 of the document in use (an unchanged set keeps its generation).
    digest: std::sync::Mutex<[u8; 32]>,
    /// One fetch at a time; callers that waited find its result.
    fetching: tokio::sync::Mutex<()>,
    /// When an unknown `kid` last had the set fetched (the refresher's fetches do not count).
    last_asked: std::sync::Mutex<Option<Instant>>,
    /// Whether the last fetch failed (logged once per change).
    failing: AtomicBool,
    /// When the set was last fetched, by the refresher or for an unknown `kid`.
    last_fetch: std::sync::Mutex<Option<Instant>>,
    /// Whether a refresher task runs for this store (one per store, across reloads).
    pub refresher: AtomicBool,
    refresh_secs: AtomicU64,
}

impl KeyStore {
    /// A store for `source`: a file is read now (an unreadable or keyless file refuses the
    /// configuration); a URL is fetched by the refresher, or by the first request.
    pub fn open(source: &KeySource, refresh: Duration) -> Result<KeyStore, String> {
        let store = KeyStore {
            source: source.clone(),
            current: ArcSwap::from_pointee(Keys { set: KeySet::default(), generation: 0 }),
            digest: std::sync::Mutex::new([0; 32]),
            fetching: tokio::sync::Mutex::new(()),
            last_asked: std::sync::Mutex::new(None),
            failing: AtomicBool::new(false),
            last_fetch: std::sync::Mutex::new(None),
            refresher: AtomicBool::new(false),
            refresh_secs: AtomicU64::new(refresh.as_secs().max(1)),
        };
        if let KeySource::File(path) = source {
            let document =
                std::fs::read(path).map_err(|e| format!("jwks_file {}: cannot read: {e}", path.display()))?;
            store.install(&document).map_err(|e| format!("jwks_file {}: {e}", path.display()))?;
        }
        Ok(store)
    }

    pub fn current(&self) -> Arc<Keys> {
        self.current.load_full()
    }

    pub fn refresh_every(&self) -> Duration {
        Duration::from_secs(self.refresh_secs.load(Ordering::Relaxed))
    }

    pub fn set_refresh_every(&self, refresh: Duration) {
        self.refresh_secs.store(refresh.as_secs().max(1), Ordering::Relaxed);
    }

    /// The refresher's loop: fetches when due, looking again at least every few seconds (so a
    /// reload that shortens `jwks_refresh` takes effect at once); ends when no configuration
    /// uses the store any more.
    pub async fn refresh(store: std::sync::Weak<KeyStore>) {
        loop {
            let Some(keys) = store.upgrade() else { return };
            if keys.until_due().is_zero() {
                keys.fetch_now().await;
            }
            let wait = keys.until_due().min(Duration::from_secs(5));
            drop(keys);
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }

    /// Keys newer than generation `seen`, fetched now if the last fetch is old enough; `None`
    /// when there are none (a file, too soon, or the issuer did not answer with new keys).
    pub async fn refetch(&self, seen: u64) -> Option<Arc<Keys>> {
        let KeySource::Url(_) = &self.source else { return None };
        let _one_at_a_time = self.fetching.lock().await;
        let current = self.current();
        if current.generation != seen {
            return Some(current);
        }
        {
            let mut last_asked = self.last_asked.lock().unwrap_or_else(|p| p.into_inner());
            if last_asked.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
                return None;
            }
            *last_asked = Some(Instant::now());
        }
        self.fetch_now().await;
        let fresh = self.current();
        (fresh.generation != seen).then_some(fresh)
    }

    /// How long until the refresher's next fetch: `jwks_refresh` after the last fetch (as the
    /// configuration says now), or [`RETRY_AFTER_FAILURE`] after a failed one; zero when due.
    pub fn until_due(&self) -> Duration {
        let last = *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
        let Some(last) = last else { return Duration::ZERO };
        let interval = if self.failing.load(Ordering::Relaxed) { RETRY_AFTER_FAILURE } else { self.refresh_every() };
        interval.saturating_sub(last.elapsed())
    }

    /// Fetches the set (URL sources) and installs it when it reads; a failure keeps the keys in
    /// use.
    pub async fn fetch_now(&self) {
        let KeySource::Url(url) = &self.source else { return };
        *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let outcome = match fetch(url).await {
            Ok(document) => self.install(&document),
            Err(problem) => Err(problem),
        };
        let metrics = &crate::metrics::METRICS.auth_key_fetches;
        match outcome {
            Ok(changed) => {
                metrics.with_label_values(&[if changed { "changed" } else { "unchanged" }]).inc();
                if self.failing.swap(false, Ordering::Relaxed) || changed {
                    let keys = self.current().set.len();
                    tracing::info!(jwks = %url, keys, "authorization keys fetched");
                }
            }
            Err(problem) => {
                metrics.with_label_values(&["error"]).inc();
                if !self.failing.swap(true, Ordering::Relaxed) {
                    let kept = self.current().set.len();
                    tracing::warn!(jwks = %url, kept, "authorization keys could not be fetched ({problem}); the keys in use are kept");
                }
            }
        }
    }

    /// Reads `document` and puts it in use; `Ok(true)` if it differs from the set in use.
    fn install(&self, document: &[u8]) -> Result<bool, String> {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, document).as_ref());
        let mut in_use = self.digest.lock().unwrap_or_else(|p| p.into_inner());
        if *in_use == digest && self.current().generation != 0 {
            return Ok(false);
        }
        // An HMAC secret only from a file the operator keeps, never from a URL.
        let set = KeySet::parse(document, matches!(self.source, KeySource::File(_)))?;
        let generation = self.current().generation + 1;
        self.current.store(Arc::new(Keys { set, generation }));
        *in_use = digest;
        Ok(true)
    }
}

/// Reads the key set at `url`: a `200` whose body is at most [`MAX_DOCUMENT`] bytes, no
/// redirects followed (the configured URL is the issuer's word).
async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let mut response = client().get(url).send().await.map_err(|e| without_url(&e))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("HTTP {}", response.status().as_u16()));
    }
    let mut document = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| without_url(&e))? {
        if document.len() + chunk.len() > MAX_DOCUMENT {
            return Err(format!("the key set is larger than {MAX_DOCUMENT} bytes"));
        }
        document.extend_from_slice(&chunk);
    }
    Ok(document)
}

fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause = std::error::Error::source(error);
    let mut deepest = None;
    while let Some(inner) = cause {
        deepest = Some(inner.to_string());
        cause = inner.source();
    }
    deepest.map_or(kind.to_string(), |deepest| format!("{kind}: {deepest}"))
}

fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::LazyLock<reqwest::Client> = std::sync::LazyLock::new(|| {
        reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mcp-edge/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with the default TLS roots")
    });
    &CLIENT
}
