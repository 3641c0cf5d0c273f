//! Debezium's transaction metadata (`provide.transaction.metadata`), between the decoder and the
//! sink: the stream opens a [`Transaction`] at a transaction's first captured change, each
//! change event it sends gets the `transaction` block, and the `<prefix>.transaction` topic
//! gets a BEGIN record before the first event and an END record after the last one:
//!
//! ```json
//! key:   {"id": "<xid>:<lsn>"}
//! BEGIN: {"status":"BEGIN","id":"<xid>:<lsn>","event_count":null,"data_collections":null,"ts_ms":<commit ms>}
//! END:   {"status":"END","id":"<xid>:<lsn>","event_count":N,
//!         "data_collections":[{"data_collection":"public.t","event_count":M}, ...],"ts_ms":<commit ms>}
//! block: "transaction":{"id":"<xid>:<lsn>","total_order":N,"data_collection_order":M}
//! ```
//!
//! As Debezium's PostgreSQL connector (`PostgresTransactionMonitor`) writes them: the id is the
//! transaction id and the position of the message at hand (the BEGIN's, each event's own
//! `source.lsn`, the COMMIT's end), so the records of one transaction share the part before the
//! colon; counts are of the change events sent (tombstones and skipped operations not counted);
//! `data_collections` comes in the order of Java's `HashMap` that Debezium iterates
//! ([`java_hash_map_order`]), so the bytes match.

use std::sync::Arc;

use super::json;

/// The transaction the stream is in, once it had a captured change.
#[derive(Debug, Clone)]
pub struct Transaction {
    xid: u32,
    /// Commit time, microseconds since the epoch.
    commit_ts_us: i64,
    total: u64,
    /// Events per table, in first-seen order.
    per_table: Vec<(Arc<str>, u64)>,
}

impl Transaction {
    pub fn new(xid: u32, commit_ts_us: i64) -> Self {
        Self {
            xid,
            commit_ts_us,
            total: 0,
            per_table: Vec::new(),
        }
    }

    /// `<xid>:<lsn>`
    pub fn id(&self, lsn: u64) -> String {
        format!("{}:{lsn}", self.xid)
    }

    /// The key of a transaction record.
    pub fn key(&self, lsn: u64) -> Vec<u8> {
        let mut buf = b"{\"id\":".to_vec();
        json::push_str(&mut buf, &self.id(lsn));
        buf.push(b'}');
        buf
    }

    /// The BEGIN record's value, `lsn` the BEGIN message's position.
    pub fn begin_value(&self, lsn: u64) -> Vec<u8> {
        let mut buf = b"{\"status\":\"BEGIN\",\"id\":".to_vec();
        json::push_str(&mut buf, &self.id(lsn));
        buf.extend_from_slice(b",\"event_count\":null,\"data_collections\":null,\"ts_ms\":");
        json::push_i64(&mut buf, self.commit_ts_us.div_euclid(1000));
        buf.push(b'}');
        buf
    }

    /// The END record's value, `lsn` the COMMIT message's position; `capacity` is the size of
    /// the `HashMap` Debezium keeps the counts in (it only grows, over the whole run).
    pub fn end_value(&self, lsn: u64, capacity: &mut usize) -> Vec<u8> {
        let mut buf = b"{\"status\":\"END\",\"id\":".to_vec();
        json::push_str(&mut buf, &self.id(lsn));
        buf.extend_from_slice(b",\"event_count\":");
        json::push_i64(&mut buf, self.total as i64);
        buf.extend_from_slice(b",\"data_collections\":[");
        let names: Vec<&str> = self.per_table.iter().map(|(name, _)| &**name).collect();
        let mut order = java_hash_map_order(&names, capacity);
        // Messages last: Debezium's entries for them are named by Java object identities and
        // placed by those (see MESSAGE_COLLECTION).
        order.sort_by_key(|&i| names[i] == MESSAGE_COLLECTION);
        for (n, index) in order.into_iter().enumerate() {
            if n > 0 {
                buf.push(b',');
            }
            let (name, count) = &self.per_table[index];
            buf.extend_from_slice(b"{\"data_collection\":");
            json::push_str(&mut buf, name);
            buf.extend_from_slice(b",\"event_count\":");
            json::push_i64(&mut buf, *count as i64);
            buf.push(b'}');
        }
        buf.extend_from_slice(b"],\"ts_ms\":");
        json::push_i64(&mut buf, self.commit_ts_us.div_euclid(1000));
        buf.push(b'}');
        buf
    }

    /// Counts one event of `table` and returns its block
    /// (`{"id":..,"total_order":..,"data_collection_order":..}`), `lsn` its `source.lsn`.
    pub fn event(&mut self, table: &Arc<str>, lsn: u64) -> Vec<u8> {
        self.total += 1;
        let order = match self.per_table.iter_mut().find(|(name, _)| name == table) {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => {
                self.per_table.push((table.clone(), 1));
                1
            }
        };
        let mut buf = b"{\"id\":".to_vec();
        json::push_str(&mut buf, &self.id(lsn));
        buf.extend_from_slice(b",\"total_order\":");
        json::push_i64(&mut buf, self.total as i64);
        buf.extend_from_slice(b",\"data_collection_order\":");
        json::push_i64(&mut buf, order as i64);
        buf.push(b'}');
        buf
    }
}

/// Puts `block` in place of the envelope's `"transaction":null`. The last occurrence: the
/// envelope's own member comes after `before` and `after` (whose columns could be named
/// `transaction`), and only `op` and the times follow it. False when the value has none.
pub fn splice_block(value: &mut Vec<u8>, block: &[u8]) -> bool {
    const NULL_BLOCK: &[u8] = b"\"transaction\":null";
    let Some(at) = value
        .windows(NULL_BLOCK.len())
        .rposition(|window| window == NULL_BLOCK)
    else {
        return false;
    };
    let null_at = at + NULL_BLOCK.len() - 4;
    value.splice(null_at..null_at + 4, block.iter().copied());
    true
}

/// Java's `String.hashCode`: UTF-16 code units, `h = 31 * h + c`, wrapping.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The order in which a Java `HashMap<String, _>` filled with `names` (in this order, distinct)
/// iterates them, as indexes into `names`: by bucket (`(h ^ h >>> 16) & (capacity - 1)`), in
/// insertion order within a bucket (a resize keeps that order). `capacity` is the table's size
/// before the inserts (16 for a new map; `clear()` keeps it), grown as Java grows it (doubled
/// when the entries exceed three quarters). Buckets of eight or more colliding names, which
/// Java turns into trees, are not modelled.
pub fn java_hash_map_order(names: &[&str], capacity: &mut usize) -> Vec<usize> {
    while names.len() * 4 > *capacity * 3 {
        *capacity *= 2;
    }
    let mask = *capacity - 1;
    let mut order: Vec<(usize, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let h = java_string_hash(name);
            let spread = h ^ ((h as u32) >> 16) as i32;
            ((spread as u32 as usize) & mask, i)
        })
        .collect();
    order.sort_by_key(|&(bucket, i)| (bucket, i));
    order.into_iter().map(|(_, i)| i).collect()
}

/// The data collection ficus counts transactional logical decoding messages under, placed
/// last in `data_collections`. Debezium 3.6 counts each message under a collection of its own
/// named by a Java object (`...LogicalDecodingMessageMonitor$LogicalDecodingMessageId@1a2b3c4d`,
/// its class lacks a `toString`), placed by that object's random identity hash: a name no one
/// can rely on, so ficus uses the id's `identifier()`, one entry for all of a transaction's
/// messages.
pub const MESSAGE_COLLECTION: &str = "LOGICAL_DECODING_MESSAGE";

/// The capacity of a new Java `HashMap`.
pub const JAVA_HASH_MAP_CAPACITY: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_string_hash_is_javas() {
        // Values from Java's "...".hashCode().
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("public.t"), 1_293_599_279);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn hash_map_order_is_by_bucket_then_insertion() {
        let mut capacity = JAVA_HASH_MAP_CAPACITY;
        // "Aa" and "BB" collide in Java: insertion order decides.
        assert_eq!(java_hash_map_order(&["BB", "Aa"], &mut capacity), [0, 1]);
        assert_eq!(java_hash_map_order(&["Aa", "BB"], &mut capacity), [0, 1]);
        // "b" (98) lands after "a" (97), whatever the insertion order.
        assert_eq!(java_hash_map_order(&["b", "a"], &mut capacity), [1, 0]);
        assert_eq!(capacity, 16);
        let many: Vec<String> = (0..13).map(|i| format!("t{i}")).collect();
        let names: Vec<&str> = many.iter().map(String::as_str).collect();
        java_hash_map_order(&names, &mut capacity);
        assert_eq!(capacity, 32, "13 entries exceed 12 = 16 * 0.75");
        java_hash_map_order(&["a"], &mut capacity);
        assert_eq!(capacity, 32, "clear() keeps the table");
    }

    #[test]
    fn records_and_block() {
        let mut tx = Transaction::new(571, 1_486_500_577_125_999);
        let a: Arc<str> = Arc::from("public.a");
        let b: Arc<str> = Arc::from("public.b");
        assert_eq!(
            String::from_utf8(tx.begin_value(100)).unwrap(),
            r#"{"status":"BEGIN","id":"571:100","event_count":null,"data_collections":null,"ts_ms":1486500577125}"#
        );
        assert_eq!(
            String::from_utf8(tx.event(&a, 101)).unwrap(),
            r#"{"id":"571:101","total_order":1,"data_collection_order":1}"#
        );
        tx.event(&b, 102);
        assert_eq!(
            String::from_utf8(tx.event(&a, 103)).unwrap(),
            r#"{"id":"571:103","total_order":3,"data_collection_order":2}"#
        );
        let mut capacity = JAVA_HASH_MAP_CAPACITY;
        assert_eq!(
            String::from_utf8(tx.end_value(200, &mut capacity)).unwrap(),
            r#"{"status":"END","id":"571:200","event_count":3,"data_collections":[{"data_collection":"public.a","event_count":2},{"data_collection":"public.b","event_count":1}],"ts_ms":1486500577125}"#
        );
        assert_eq!(
            String::from_utf8(tx.key(200)).unwrap(),
            r#"{"id":"571:200"}"#
        );
    }

    #[test]
    fn the_envelopes_own_member_is_replaced() {
        let mut value =
            br#"{"before":null,"after":{"transaction":null,"op":"x"},"transaction":null,"op":"c"}"#
                .to_vec();
        assert!(splice_block(&mut value, b"{\"id\":\"1:2\"}"));
        assert_eq!(
            String::from_utf8(value).unwrap(),
            r#"{"before":null,"after":{"transaction":null,"op":"x"},"transaction":{"id":"1:2"},"op":"c"}"#
        );
        assert!(!splice_block(&mut b"{}".to_vec(), b"{}"));
    }
}
