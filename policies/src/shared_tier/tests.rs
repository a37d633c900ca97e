use super::*;

#[test]
fn keys_are_digests_under_the_prefix() {
    let names = Names::new("edge-a", None);
    let key: Key = [0xab; 32];
    assert_eq!(names.entry(&key), (format!("edge-a:e:{}", "ab".repeat(32)), 0));
    assert_eq!(names.marker(0, &key), format!("edge-a:m:{}", "ab".repeat(32)));
    assert_eq!(names.everything_marker(0), "edge-a:m:everything");
    assert_eq!(names.channel(), "edge-a:invalidations");
    assert_eq!(names.buckets(), 0..1, "one server: one bucket, names without hash tags");
}

#[test]
fn on_a_cluster_an_entry_and_every_marker_that_could_kill_it_share_a_slot() {
    let names = Names::clustered("edge-a", None);
    assert_eq!(names.buckets(), 0..CLUSTER_BUCKETS);
    let mut used = std::collections::HashSet::new();
    for n in 0u8..=255 {
        let key: Key = [n; 32];
        let (entry, bucket) = names.entry(&key);
        let slot = cluster_slot(entry.as_bytes());
        assert_eq!(cluster_slot(names.marker(bucket, &[7; 32]).as_bytes()), slot, "{entry}");
        assert_eq!(cluster_slot(names.everything_marker(bucket).as_bytes()), slot);
        assert!(entry.starts_with("edge-a:{"), "{entry}");
        used.insert(bucket);
    }
    assert_eq!(used.len(), usize::from(CLUSTER_BUCKETS), "entries spread over every bucket");
    let keyed = Names::clustered("edge-a", Some(&secret(SECRET)));
    assert_ne!(keyed.entry(&[1; 32]).0, names.entry(&[1; 32]).0, "keyed names on a cluster too");
}

#[test]
fn bucket_slots_spread_evenly_over_the_cluster() {
    // Redis's own examples: CRC16/XMODEM of "123456789" is 0x31C3; a hash tag decides the slot.
    assert_eq!(cluster_slot(b"123456789"), 0x31C3);
    assert_eq!(cluster_slot(b"a:{user1000}:x"), cluster_slot(b"user1000"));
    assert_eq!(cluster_slot(b"a:{}:x"), cluster_slot(b"a:{}:x"), "an empty tag is no tag");
    let tags = bucket_tags(16);
    let slots: Vec<u16> = tags.iter().map(|tag| cluster_slot(tag.as_bytes())).collect();
    for (i, slot) in slots.iter().enumerate() {
        assert_eq!(usize::from(*slot) / 1024, i, "bucket {i}: slot {slot} out of its range");
    }
    // Three masters as `redis-cli --cluster create` splits the slots: 5 or 6 buckets each.
    let per_master = |range: std::ops::RangeInclusive<u16>| slots.iter().filter(|s| range.contains(s)).count();
    for master in [0..=5460, 5461..=10922, 10923..=16383] {
        assert!((5..=6).contains(&per_master(master.clone())), "{master:?}");
    }
}

#[test]
fn a_shared_entry_lives_while_it_can_be_served_capped() {
    let (minute, hour) = (Duration::from_secs(60), Duration::from_secs(3600));
    assert_eq!(entry_life_ms(1_000, 61_000, Duration::ZERO, hour), Some(60_000));
    assert_eq!(entry_life_ms(1_000, 61_000, minute, hour), Some(120_000), "kept for stale-if-error");
    assert_eq!(entry_life_ms(1_000, 10_000_000, Duration::ZERO, hour), Some(3_600_000), "capped");
    assert_eq!(entry_life_ms(61_000, 61_000, Duration::ZERO, hour), None, "already dead");
    assert!(marker_life_ms(hour) > 3_600_000, "a marker outlives what it kills");
}

#[test]
fn announcements_round_trip_and_strangers_are_refused() {
    let markers = Announcement { node: 7, at_ms: 1_234, what: Invalidated::Markers(vec![[1; 32], [2; 32]]) };
    assert_eq!(Announcement::decode(&markers.encode()), Some(markers.clone()));
    let everything = Announcement { node: 9, at_ms: 5, what: Invalidated::Everything };
    assert_eq!(Announcement::decode(&everything.encode()), Some(everything));
    let mut torn = markers.encode();
    torn.pop();
    assert_eq!(Announcement::decode(&torn), None, "a key cut short");
    assert_eq!(Announcement::decode(b"hello"), None);
    assert_eq!(Announcement::decode(&[]), None);
    let mut foreign = markers.encode();
    foreign[0] = b'{';
    assert_eq!(Announcement::decode(&foreign), None);
    let no_keys = Announcement { node: 1, at_ms: 1, what: Invalidated::Markers(vec![]) };
    assert_eq!(Announcement::decode(&no_keys.encode()), None, "markers of nothing mean nothing");
}

#[test]
fn pending_invalidations_keep_their_times_and_overflow_into_everything() {
    let mut pending = Pending::with_capacity(3);
    assert!(pending.is_empty());
    pending.add(&[[1; 32], [2; 32]], 100);
    pending.add(&[[3; 32]], 200);
    let sent = pending.take(4);
    assert_eq!(
        sent,
        vec![
            Announcement { node: 4, at_ms: 100, what: Invalidated::Markers(vec![[1; 32], [2; 32]]) },
            Announcement { node: 4, at_ms: 200, what: Invalidated::Markers(vec![[3; 32]]) },
        ]
    );
    assert!(pending.is_empty(), "taken once");

    pending.add(&[[1; 32], [2; 32], [3; 32]], 300);
    pending.add(&[[4; 32]], 250);
    pending.add(&[[5; 32]], 260);
    assert_eq!(
        pending.take(4),
        vec![Announcement { node: 4, at_ms: 300, what: Invalidated::Everything }],
        "over capacity: everything, as of the latest time seen"
    );
}

#[test]
fn the_breaker_opens_after_failures_backs_off_and_closes_on_success() {
    let mut breaker = Breaker::default();
    for _ in 0..FAILURES_TO_OPEN - 1 {
        assert_eq!(breaker.admit(0), Admit::Ask);
        breaker.failed(0);
    }
    assert!(!breaker.is_open());
    breaker.failed(0);
    assert!(breaker.is_open());
    assert_eq!(breaker.admit(500), Admit::Skip, "open for a second");
    breaker.failed(600);
    assert_eq!(breaker.admit(999), Admit::Skip, "a late failure does not extend it");
    assert_eq!(breaker.admit(1_000), Admit::Probe, "then one request tries again");
    assert_eq!(breaker.admit(1_000), Admit::Skip, "only one");
    breaker.failed(1_010);
    assert_eq!(breaker.admit(2_500), Admit::Skip, "open twice as long");
    assert_eq!(breaker.admit(3_010), Admit::Probe);
    breaker.succeeded();
    assert!(!breaker.is_open());
    assert_eq!(breaker.admit(3_011), Admit::Ask);
    for at in 0..100 {
        breaker.failed(at * 100_000);
        let _ = breaker.admit(at * 100_000 + 1);
    }
    assert!(breaker.next_open_ms <= LONGEST_OPEN_MS, "backoff is capped");
}

#[test]
fn an_unsent_announcement_is_kept_whatever_it_invalidates() {
    let mut pending = Pending::with_capacity(10);
    pending.keep(&Announcement { node: 1, at_ms: 100, what: Invalidated::Markers(vec![[1; 32]]) });
    assert_eq!(pending.take(4), vec![Announcement { node: 4, at_ms: 100, what: Invalidated::Markers(vec![[1; 32]]) }]);
    pending.keep(&Announcement { node: 1, at_ms: 100, what: Invalidated::Markers(vec![[1; 32]]) });
    pending.keep(&Announcement { node: 1, at_ms: 50, what: Invalidated::Everything });
    assert_eq!(
        pending.take(4),
        vec![Announcement { node: 4, at_ms: 100, what: Invalidated::Everything }],
        "everything as of the later marker it replaced"
    );
}

#[test]
fn redis_memory_is_read_from_info() {
    let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nused_memory_rss:9000000\r\nmaxmemory:67108864\r\nmaxmemory_human:64.00M\r\n";
    assert_eq!(redis_memory(info), Some((1 << 20, Some(64 << 20))));
    assert_eq!(redis_memory("used_memory:10\r\nmaxmemory:0\r\n"), Some((10, None)), "0: no limit");
    assert_eq!(redis_memory("used_memory_human:1.00M\r\n"), None);
    assert_eq!(redis_memory("garbage"), None);
}

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn secret(text: &[u8]) -> Secret {
    Secret::new(text).expect("long enough")
}

#[test]
fn a_secret_must_be_long_and_keys_the_names() {
    let short = Secret::new(&SECRET[..MIN_SECRET_LEN - 1]).unwrap_err();
    assert!(short.contains("at least 32"), "{short}");
    let key: Key = [0xab; 32];
    let (plain, keyed) = (Names::new("p", None), Names::new("p", Some(&secret(SECRET))));
    let name = keyed.entry(&key).0;
    assert_eq!(name.len(), plain.entry(&key).0.len(), "as long as a plain name");
    assert!(name.starts_with("p:e:") && !name.contains(&"ab".repeat(32)), "{name}");
    assert_eq!(name, Names::new("p", Some(&secret(SECRET))).entry(&key).0, "every node names it alike");
    assert_ne!(name, Names::new("p", Some(&secret(b"another secret of 32 bytes or more"))).entry(&key).0);
    assert_ne!(keyed.marker(0, &key)[4..], name[4..], "markers and entries are named apart");
    assert_eq!(keyed.everything_marker(0), "p:m:everything");
}

#[test]
fn a_sealed_value_opens_only_whole_under_its_own_name_and_secret() {
    let secret = secret(SECRET);
    let plain = b"{\"contents\":[{\"text\":\"alice's private answer\"}]}";
    let sealed = secret.seal("p:e:alice", plain, [7; NONCE_LEN]);
    assert_eq!(sealed.len(), plain.len() + SEALING_OVERHEAD);
    assert!(!sealed.windows(7).any(|w| w == b"private"), "encrypted");
    assert_eq!(secret.open("p:e:alice", &sealed).as_deref(), Some(&plain[..]));
    assert_ne!(sealed, secret.seal("p:e:alice", plain, [8; NONCE_LEN]), "a fresh nonce, a different value");
    assert_eq!(secret.open("p:e:bob", &sealed), None, "moved to another name");
    for at in [0, 1, 13, sealed.len() / 2, sealed.len() - 1] {
        let mut tampered = sealed.clone();
        tampered[at] ^= 1;
        assert_eq!(secret.open("p:e:alice", &tampered), None, "byte {at} changed");
    }
    assert_eq!(secret.open("p:e:alice", &sealed[..sealed.len() - 1]), None, "cut short");
    assert_eq!(secret.open("p:e:alice", &sealed[..SEALING_OVERHEAD - 1]), None, "shorter than a seal");
    assert_eq!(secret.open("p:e:alice", plain), None, "never sealed");
    let other = Secret::new(b"another secret of 32 bytes or more").unwrap();
    assert_eq!(other.open("p:e:alice", &sealed), None, "another secret");
}

#[test]
fn announcements_with_a_secret_are_signed_and_anything_else_is_refused() {
    let secret = secret(SECRET);
    let now = 1_000_000;
    let announcement = Announcement { node: 3, at_ms: now, what: Invalidated::Markers(vec![[1; 32]]) };
    let signed = publish(&announcement, "p:invalidations", Some(&secret));
    assert_eq!(hear(&signed, "p:invalidations", Some(&secret), now), Heard::Announcement(announcement.clone()));
    assert_eq!(hear(&signed, "q:invalidations", Some(&secret), now), Heard::Refused, "another deployment's");
    let unsigned = publish(&announcement, "p:invalidations", None);
    assert_eq!(hear(&unsigned, "p:invalidations", Some(&secret), now), Heard::Refused);
    let mut tampered = signed.clone();
    tampered[10] ^= 1;
    assert_eq!(hear(&tampered, "p:invalidations", Some(&secret), now), Heard::Refused);
    assert_eq!(hear(b"hello", "p:invalidations", Some(&secret), now), Heard::Refused);
    let other = Secret::new(b"another secret of 32 bytes or more").unwrap();
    assert_eq!(hear(&signed, "p:invalidations", Some(&other), now), Heard::Refused);
    // Without a secret: strangers are ignored, and announced times are still bounded.
    assert_eq!(hear(&unsigned, "p:invalidations", None, now), Heard::Announcement(announcement));
    assert_eq!(hear(b"hello", "p:invalidations", None, now), Heard::Stranger);
    let huge = Announcement { node: 3, at_ms: u64::MAX, what: Invalidated::Everything };
    assert_eq!(hear(&huge.encode(), "p:invalidations", None, now), Heard::Refused, "the 18 bytes that stopped caching");
    let skewed = Announcement { node: 3, at_ms: now + CLOCK_SKEW_MS, what: Invalidated::Everything };
    assert_eq!(hear(&skewed.encode(), "p", None, now), Heard::Announcement(skewed.clone()), "within the skew");
    let signed_future =
        publish(&Announcement { at_ms: now + CLOCK_SKEW_MS + 1, ..skewed }, "p:invalidations", Some(&secret));
    assert_eq!(hear(&signed_future, "p:invalidations", Some(&secret), now), Heard::Refused, "even signed");
}

#[test]
fn times_read_back_are_bounded_by_now_plus_skew_and_entry_lives_by_the_caps() {
    let (now, minute, hour) = (10_000_000, 60_000, 3_600_000);
    assert_eq!(bounded_expiry(now, now - 1_000, now + minute, hour, hour), Ok(now + minute), "a fair entry");
    assert_eq!(bounded_expiry(now, now + CLOCK_SKEW_MS, now + minute, hour, hour), Ok(now + minute), "skewed");
    assert_eq!(
        bounded_expiry(now, now + CLOCK_SKEW_MS + 1, u64::MAX, hour, hour),
        Err(Unusable::Future),
        "fetched in the future"
    );
    assert_eq!(bounded_expiry(now, now - 1_000, u64::MAX, minute, hour), Ok(now - 1_000 + minute), "max_ttl");
    assert_eq!(
        bounded_expiry(now, now - hour - CLOCK_SKEW_MS - 1, u64::MAX, u64::MAX, hour),
        Err(Unusable::Outlived),
        "past ttl_cap"
    );
    assert_eq!(bounded_expiry(now, 0, u64::MAX, u64::MAX, u64::MAX), Ok(u64::MAX), "no overflow");
    assert_eq!(marker_ms(b"1234", now), Some(1234));
    assert_eq!(marker_ms(format!("{}", now + CLOCK_SKEW_MS + 1).as_bytes(), now), None, "from the future");
    assert_eq!(marker_ms(b"18446744073709551615", now), None);
    assert_eq!(marker_ms(b"soon", now), None);
}

fn master(address: &str, reachable: bool, slots: &[(u16, u16)]) -> ClusterMaster {
    ClusterMaster { address: address.to_string(), reachable, slots: slots.to_vec() }
}

#[test]
fn the_buckets_a_masters_slots_hold_are_found_from_its_ranges() {
    let names = Names::clustered("mcp-edge", None);
    assert_eq!(buckets_in(&names, &[(0, 16383)]), 0xffff, "every bucket");
    assert_eq!(buckets_in(&names, &[]), 0);
    // Bucket b's slot lies in the b-th 1 024 slots.
    assert_eq!(buckets_in(&names, &[(0, 1023)]), 1);
    assert_eq!(
        buckets_in(&names, &[(0, 5460)]),
        0b1_1111,
        "a third of the slots: five buckets (the sixth's slot is past 5 460)"
    );
    assert_eq!(buckets_in(&names, &[(15360, 16383), (1024, 2047)]), 1 << 15 | 1 << 1);
    assert_eq!(buckets_in(&Names::new("mcp-edge", None), &[(0, 16383)]), 0, "one server: no buckets");
}

#[test]
fn a_clusters_report_names_its_masters_and_which_are_reachable() {
    let nodes = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-d slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail? - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master - 0 1426238316232 5 disconnected 1-2
8ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30006@31006 master - 0 1426238316232 5 connected
garbage
";
    assert_eq!(
        cluster_masters(nodes),
        vec![
            master("127.0.0.1:30002", true, &[(5461, 10922)]),
            master("127.0.0.1:30003", false, &[(10923, 16383)]),
            master("127.0.0.1:30001", true, &[(0, 5460)]),
            master("127.0.0.1:30005", false, &[(1, 2)]),
        ]
    );
    let moving = "a 10.0.0.1:7000@17000 master - 0 0 1 connected 0-99 100 [101->-b] 200-16383 16384 5-1 x\n";
    assert_eq!(cluster_masters(moving), vec![master("10.0.0.1:7000", true, &[(0, 99), (100, 100), (200, 16383)])]);
    let flood: String = (0..1000).map(|n| format!("id{n} 10.0.0.1:{n}@1 master - 0 0 1 connected {n}\n")).collect();
    assert_eq!(cluster_masters(&flood).len(), MAX_REPORTED_MASTERS, "bounded whatever the server says");
}
