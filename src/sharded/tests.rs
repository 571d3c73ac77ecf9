//! Unit tests of the sharded log's routing and handle.

use super::*;
use std::hash::{DefaultHasher, Hash};

#[test]
fn routing_is_the_standard_librarys_default_hasher() {
    for i in 0..2000u32 {
        let key = format!("key_{i}").into_bytes();
        let mut h = DefaultHasher::new();
        key.as_slice().hash(&mut h);
        for n in [1u16, 3, 16, 100, 256] {
            assert_eq!(route(&key, n), (h.finish() % n as u64) as u16);
        }
    }
}

#[test]
fn shard_names() {
    assert_eq!(shard_name(0), "shard_00");
    assert_eq!(shard_name(100), "shard_100");
    assert_eq!(shard_number("shard_07"), Some(7));
    assert_eq!(shard_number("shard_7"), None);
    assert_eq!(shard_number("shard_100"), Some(100));
    assert_eq!(shard_number("orders"), None);
}
