//! The store's unit tests: keys, tiers, markers across a restart, memory admission.

use super::*;
use foyer::Code;
use mcp_edge_policies::cache::Scope;

#[test]
fn store_keys_round_trip_through_their_disk_form() {
    let key = StoreKey(std::array::from_fn(|i| i as u8 * 7));
    let mut written = Vec::new();
    key.encode(&mut written).unwrap();
    assert_eq!(written.len(), key.estimated_size());
    assert_eq!(StoreKey::decode(&mut written.as_slice()).unwrap(), key);
    // A truncated record is an error, never a short key.
    assert!(StoreKey::decode(&mut &written[..31]).is_err());
}

#[test]
fn each_memory_shard_holds_entries_of_the_largest_cacheable_size() {
    assert_eq!(memory_shards(256 << 20, 8 << 20), 8, "the defaults");
    assert_eq!(memory_shards(2 << 30, 8 << 20), 64);
    assert_eq!(memory_shards(8 << 20, 8 << 20), 1);
    assert_eq!(memory_shards(1 << 20, 0), 64);
    let config =
        CacheConfig { memory: 256 << 20, disk_path: None, disk_size: 0, max_entry_size: 8 << 20, shared: None };
    let cache = EdgeCache::open(&config).unwrap();
    let key = StoreKey([2; 32]);
    cache.store.insert(key, Bytes::from(vec![b'x'; 8 << 20]));
    // A shard evicts when something else is inserted into it: touch every shard.
    for i in 0..1000u16 {
        let mut small = [3; 32];
        small[..2].copy_from_slice(&i.to_le_bytes());
        cache.store.insert(StoreKey(small), Bytes::from_static(b"small"));
    }
    assert!(cache.store.memory().get(&key).is_some(), "an entry of max_entry_size stays in memory");
}

#[test]
fn cache_threads_yield_to_the_proxy_workers() {
    let config = CacheConfig { memory: 1 << 20, disk_path: None, disk_size: 0, max_entry_size: 1 << 20, shared: None };
    let cache = EdgeCache::open(&config).unwrap();
    assert!(!cache.store.storage().is_enabled(), "no disk path: memory only");
    let cache_thread_policies = || {
        let mut policies = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == "cache-io" {
                let tid: i32 = task.file_name().to_str().unwrap().parse().unwrap();
                // SAFETY: reads the policy of a thread of this process.
                policies.push(unsafe { libc::sched_getscheduler(tid) });
            }
        }
        policies
    };
    // A thread is named before its start hook runs, and other tests start cache runtimes
    // in parallel: wait until every thread seen has run its hook (one never would).
    let all_batch = |policies: &[i32]| !policies.is_empty() && policies.iter().all(|&p| p == libc::SCHED_BATCH);
    let mut policies = cache_thread_policies();
    for _ in 0..100 {
        if all_batch(&policies) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        policies = cache_thread_policies();
    }
    assert!(!policies.is_empty(), "the cache runtime has threads");
    assert!(policies.iter().all(|&p| p == libc::SCHED_BATCH), "{policies:?}");
}

fn disk_config(dir: &Path) -> CacheConfig {
    CacheConfig {
        memory: 16 << 20,
        disk_path: Some(dir.to_path_buf()),
        disk_size: 64 << 20,
        max_entry_size: 1 << 20,
        shared: None,
    }
}

fn read_lookup(uri: &str) -> Lookup {
    read_lookup_on("r", uri)
}

fn read_lookup_on(route: &str, uri: &str) -> Lookup {
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#);
    let message = mcp_edge_policies::jsonrpc::parse(body.as_bytes()).unwrap();
    let caller = mcp_edge_policies::cache::Caller {
        identity: None,
        session: None,
        stateless: true,
        protocol_version: Some("2026-07-28".into()),
        capabilities: None,
        session_alive: false,
    };
    let config =
        mcp_edge_policies::Config::from_toml("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://h:1/mcp\"]\n").unwrap();
    mcp_edge_policies::cache::lookup_for(route, &message, &caller, &config.routes[0].policy, |_| false).unwrap()
}

fn store_fetched_at(cache: &EdgeCache, lookup: &Lookup, fetched_at_ms: u64) {
    store_with_ttl_of(cache, lookup, fetched_at_ms, false);
}

/// Stores an entry fetched at `fetched_at_ms`, on mcp-edge's own TTL (`own_ttl`) or the
/// server's.
fn store_with_ttl_of(cache: &EdgeCache, lookup: &Lookup, fetched_at_ms: u64, own_ttl: bool) {
    let entry = Entry {
        fetched_at_ms,
        expires_at_ms: fetched_at_ms + 3_600_000,
        restate_ttl: !own_ttl,
        own_ttl,
        result: br#"{"contents":[]}"#,
        deflated: None,
    };
    cache.insert(lookup.key(&Scope::Public(mcp_edge_policies::cache::Audience::Anonymous)), &entry);
}

fn is_fresh(cache: &EdgeCache, lookup: &Lookup) -> bool {
    is_fresh_on(cache, "r", lookup)
}

fn is_fresh_on(cache: &EdgeCache, route: &str, lookup: &Lookup) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    matches!(runtime.block_on(cache.lookup(route, lookup, Duration::ZERO, Duration::MAX)), Found::Fresh(_))
}

#[test]
fn an_invalidation_outlives_a_restart_through_the_markers_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let (dead, alive) = (read_lookup("a://dead"), read_lookup("a://alive"));
    let before_start = now_ms() - 1_000;
    let invalidated_at = {
        let cache = EdgeCache::open(&disk_config(dir.path())).unwrap();
        assert!(cache.disk_markers_until_ms >= before_start, "a new disk tier gets a watermark of now");
        store_fetched_at(&cache, &dead, before_start);
        store_fetched_at(&cache, &alive, before_start);
        cache.invalidate("r", &[Target::Resource("a://dead".into())], "test");
        cache.runtime.block_on(cache.close());
        cache.markers.latest_ms()
    };
    let cache = EdgeCache::open(&disk_config(dir.path())).unwrap();
    assert_eq!(cache.disk_markers_until_ms, invalidated_at, "read back from disk");
    assert!(!is_fresh(&cache, &dead), "killed by a marker of the previous process");
    assert!(is_fresh(&cache, &alive));
    // Fetched after every marker: answered without reading one.
    let later = read_lookup("a://later");
    store_fetched_at(&cache, &later, invalidated_at + 1);
    assert!(is_fresh(&cache, &later));
}

/// A disk tier an earlier version left with a marker from the future (applied from a forged
/// announcement): it kills nothing, and the watermark read back is not later than now.
#[test]
fn a_marker_from_the_future_left_on_disk_kills_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let poisoned = read_lookup("a://poisoned");
    let fetched_at = now_ms() - 1_000;
    {
        let cache = EdgeCache::open(&disk_config(dir.path())).unwrap();
        store_fetched_at(&cache, &poisoned, fetched_at);
        let key = marker_key("r", &Target::Resource("a://poisoned".into()));
        cache.markers.set(&[key], u64::MAX);
        cache.runtime.block_on(cache.close());
    }
    let cache = EdgeCache::open(&disk_config(dir.path())).unwrap();
    assert!(cache.disk_markers_until_ms <= now_ms() + mcp_edge_policies::shared_tier::CLOCK_SKEW_MS);
    assert!(is_fresh(&cache, &poisoned));
}

#[test]
fn a_write_kills_only_entries_kept_on_mcp_edges_own_ttl() {
    let cache = EdgeCache::open(&CacheConfig { disk_path: None, ..disk_config(Path::new("/")) }).unwrap();
    let (guessed, hinted) = (read_lookup("a://guessed"), read_lookup("a://hinted"));
    store_with_ttl_of(&cache, &guessed, now_ms() - 1, true);
    store_with_ttl_of(&cache, &hinted, now_ms() - 1, false);
    cache.invalidate("r", &[Target::Unhinted], "test");
    assert!(!is_fresh(&cache, &guessed));
    assert!(is_fresh(&cache, &hinted), "the server vouched for it with ttlMs");
    let other_route = marker_key("r2", &Target::Unhinted);
    assert!(cache.markers.in_memory(&other_route).is_none(), "one route's write is that route's");
}

#[test]
fn markers_past_their_bound_fold_into_one_that_kills_what_they_would_have() {
    let cache = EdgeCache::open(&CacheConfig { disk_path: None, ..disk_config(Path::new("/")) }).unwrap();
    let (named, unnamed) = (read_lookup("a://named-early"), read_lookup("a://unnamed"));
    let fetched_at = now_ms() - 10_000;
    store_fetched_at(&cache, &named, fetched_at);
    store_fetched_at(&cache, &unnamed, fetched_at);
    // Markers of ever newer times, the first naming `named`.
    let start = now_ms() - 5_000;
    let uri_marker = |n: u64, uri: String| {
        cache.markers.set(&[marker_key("r", &Target::Resource(uri))], start + n / 64);
    };
    uri_marker(0, "a://named-early".into());
    for n in 1..=(markers::MAX_MARKERS as u64 + 1) {
        uri_marker(n, format!("a://flood/{n}"));
    }
    assert!(cache.markers.len() <= markers::MAX_MARKERS, "bounded: {}", cache.markers.len());
    assert!(!is_fresh(&cache, &named), "its marker was folded, not forgotten");
    assert!(!is_fresh(&cache, &unnamed), "the fold kills more than it must, never less");
    let later = read_lookup("a://later");
    store_fetched_at(&cache, &later, now_ms());
    assert!(is_fresh(&cache, &later));
}

/// A flood of URIs invalidated by name on one route (a tool echoing URIs a client chose)
/// costs that route its entries, never another route's, and memory stays bounded.
#[test]
fn a_routes_flood_of_named_markers_folds_into_that_route_only() {
    let cache = EdgeCache::open(&CacheConfig { disk_path: None, ..disk_config(Path::new("/")) }).unwrap();
    let (flooded, other) = (read_lookup_on("r", "a://kept?"), read_lookup_on("other", "a://kept"));
    store_fetched_at(&cache, &flooded, now_ms() - 1);
    store_fetched_at(&cache, &other, now_ms() - 1);
    for n in 0..=MAX_NAMED_MARKERS_PER_ROUTE {
        cache.invalidate("r", &[Target::Resource(format!("a://flood/{n}"))], "test");
    }
    assert!(cache.markers.len() <= MAX_NAMED_MARKERS_PER_ROUTE / 2 + 2, "folded: {}", cache.markers.len());
    assert!(!is_fresh_on(&cache, "r", &flooded), "the flooded route's entries die");
    assert!(is_fresh_on(&cache, "other", &other), "another route keeps its entries");
    assert!(cache.markers.in_memory(&marker_key("r", &Target::Route)).is_some());
}

#[test]
fn an_invalidation_kills_only_entries_fetched_up_to_it() {
    let cache = EdgeCache::open(&CacheConfig { disk_path: None, ..disk_config(Path::new("/")) }).unwrap();
    assert_eq!(cache.disk_markers_until_ms, 0, "memory only: no marker predates this process");
    let (before, after) = (read_lookup("a://1"), read_lookup("a://2"));
    store_fetched_at(&cache, &before, now_ms() - 1);
    cache.invalidate("r", &[Target::Route], "test");
    let invalidated_at = cache.markers.latest_ms();
    store_fetched_at(&cache, &after, invalidated_at + 1);
    assert!(!is_fresh(&cache, &before));
    assert!(is_fresh(&cache, &after));
    store_fetched_at(&cache, &before, invalidated_at);
    assert!(!is_fresh(&cache, &before), "a fetch started in the marker's millisecond may predate it");
}

#[test]
fn a_full_memory_tier_copies_only_disk_hits_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = EdgeCache::open(&disk_config(dir.path())).unwrap();
    // Keys spread like digests: the doorkeeper tells keys apart by their first 64 bits.
    let key = |tag: u8, n: u16| {
        let mut key = [tag; 32];
        let spread = (u64::from(n) << 8 | u64::from(tag)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        key[..8].copy_from_slice(&spread.to_le_bytes());
        StoreKey(key)
    };
    // On disk alone, then a memory tier full of other entries.
    for n in 0..=256 {
        cache.store.insert(key(b'd', n), Bytes::from_static(b"on disk"));
        cache.store.memory().remove(&key(b'd', n));
    }
    for n in 0..4096 {
        cache.store.memory().insert(key(b'm', n), Bytes::from(vec![0; 8 << 10]));
    }
    assert!(!cache.memory_has_room());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        for n in 0..256 {
            let read = cache.get(&key(b'd', n)).await.expect("on disk");
            assert!(matches!(read, Stored::Disk(_)), "read once: not copied into memory");
        }
        let again = key(b'd', 256);
        assert!(matches!(cache.get(&again).await, Some(Stored::Disk(_))));
        let second = cache.get(&again).await.expect("on disk");
        assert!(matches!(second, Stored::Loaded(_)), "read again: copied into memory");
        assert_eq!(&second[..], b"on disk");
        assert!(matches!(cache.get(&again).await, Some(Stored::Memory(_))));
    });
}

#[test]
fn disk_hits_are_copied_into_a_memory_tier_with_room() {
    let dir = tempfile::tempdir().unwrap();
    let cache = EdgeCache::open(&disk_config(dir.path())).unwrap();
    assert!(cache.store.storage().is_enabled());
    let key = StoreKey([1; 32]);
    // Written to disk as it is stored; then dropped from memory alone.
    cache.store.insert(key, Bytes::from_static(b"on disk"));
    cache.store.memory().remove(&key);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let loaded = cache.get(&key).await.expect("the disk tier has the entry");
        assert!(matches!(loaded, Stored::Loaded(_)), "read from the disk tier");
        assert_eq!(&loaded[..], b"on disk");
        let again = cache.get(&key).await.expect("still there");
        assert!(matches!(again, Stored::Memory(_)), "a disk hit is kept in memory");
        assert_eq!(&again[..], b"on disk");
    });
}

#[test]
fn local_entries_got_before_the_current_subscription_are_not_served_unless_confirmed_since() {
    let cache = EdgeCache::open(&CacheConfig { disk_path: None, ..disk_config(Path::new("/")) }).unwrap();
    let (old, confirmed, new) = (read_lookup("a://old"), read_lookup("a://confirmed"), read_lookup("a://new"));
    let subscribed_at = now_ms() - 1_000;
    store_fetched_at(&cache, &old, subscribed_at - 10);
    store_fetched_at(&cache, &new, subscribed_at + 1);
    store_fetched_at(&cache, &confirmed, subscribed_at - 10);
    assert!(is_fresh(&cache, &old), "no shared tier: every local entry is trusted");
    // What a shared-tier hit leaves in the local tiers: the entry as fetched, confirmed later.
    let key = StoreKey(confirmed.key(&Scope::Public(mcp_edge_policies::cache::Audience::Anonymous)));
    let encoded = cache.store.memory().get(&key).unwrap().value().clone();
    cache.store.insert(key, Bytes::from(entry::confirmed(&encoded, subscribed_at + 5).unwrap()));

    cache.markers.trust_local_after(subscribed_at);
    assert!(!is_fresh(&cache, &old), "got before the subscription: may have missed an invalidation");
    assert!(is_fresh(&cache, &new), "fetched after it");
    assert!(is_fresh(&cache, &confirmed), "confirmed by the shared tier after it");

    // An announced invalidation of everything kills what was fetched up to it, confirmed or not.
    cache.markers.set_everything(subscribed_at + 10);
    assert!(!is_fresh(&cache, &new) && !is_fresh(&cache, &confirmed));
    let later = read_lookup("a://later");
    store_fetched_at(&cache, &later, subscribed_at + 11);
    assert!(is_fresh(&cache, &later));
}

#[test]
fn an_announced_marker_older_than_the_one_held_does_not_move_it_back() {
    let cache = EdgeCache::open(&CacheConfig { disk_path: None, ..disk_config(Path::new("/")) }).unwrap();
    let lookup = read_lookup("a://x");
    let key = mcp_edge_policies::cache::marker_key("r", &Target::Resource("a://x".into()));
    let base = now_ms() - 10_000;
    cache.markers.set(&[key], base + 500);
    cache.markers.set(&[key], base + 100);
    assert_eq!(cache.markers.in_memory(&key), Some(base + 500));
    store_fetched_at(&cache, &lookup, base + 400);
    assert!(!is_fresh(&cache, &lookup), "the later marker holds");
    store_fetched_at(&cache, &lookup, base + 501);
    assert!(is_fresh(&cache, &lookup));
}
