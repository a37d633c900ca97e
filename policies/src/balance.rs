//! Balancing decisions that pingora's selection algorithms do not make for us.

/// Picks the candidate with the fewest requests in flight. Ties go to the first candidate at
/// or after `rotation` (modulo the count), so equal loads still spread.
pub fn least_loaded<T: Copy>(candidates: &[(T, usize)], rotation: usize) -> Option<T> {
    if candidates.is_empty() {
        return None;
    }
    let n = candidates.len();
    (0..n)
        .map(|offset| candidates[(rotation + offset) % n])
        .min_by_key(|&(_, inflight)| inflight)
        .map(|(candidate, _)| candidate)
}

/// The key a `consistent` route hashes on: the caller's identity header when present (the
/// same user keeps the same upstream), else the client address.
pub fn consistent_key<'a>(identity: Option<&'a [u8]>, client_addr: &'a [u8]) -> &'a [u8] {
    identity.filter(|v| !v.is_empty()).unwrap_or(client_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_loaded_prefers_idle_upstreams() {
        assert_eq!(least_loaded(&[('a', 3), ('b', 1), ('c', 2)], 0), Some('b'));
        assert_eq!(least_loaded::<char>(&[], 0), None);
    }

    #[test]
    fn ties_rotate() {
        let c = [('a', 0), ('b', 0), ('c', 0)];
        let picks: Vec<char> = (0..3).map(|r| least_loaded(&c, r).unwrap()).collect();
        assert_eq!(picks, vec!['a', 'b', 'c']);
    }

    #[test]
    fn consistent_key_falls_back_to_address() {
        assert_eq!(consistent_key(Some(b"Bearer x"), b"1.2.3.4"), b"Bearer x");
        assert_eq!(consistent_key(Some(b""), b"1.2.3.4"), b"1.2.3.4");
        assert_eq!(consistent_key(None, b"1.2.3.4"), b"1.2.3.4");
    }
}
