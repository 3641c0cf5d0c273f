//! A record the broker will never take, under `errors.tolerance = "all"`: what goes to the
//! dead-letter topic and what takes the record's place in its table's topic. Called by the
//! sink ([`super::Sink::try_send`]) before the record reaches the producer; pure, so the shapes
//! are tested here.
//!
//! The placeholder is the change event itself with the values of its largest columns (in
//! `before` and `after`, largest first) replaced by `toast_placeholder` (Debezium's
//! `__debezium_unavailable_value` by default) until the event fits the topic's limit: a
//! Debezium consumer already handles that value (Debezium emits it for an unchanged TOAST
//! column), and the event keeps its key, `op`, `source` (with its `lsn`) and every small
//! column. Headers say what happened (see [`PLACEHOLDER_HEADERS`]). A record that is not a
//! change event (an outbox message) gets no placeholder: only the dead-letter record.

use serde_json::Value;

/// Bytes a record costs beyond its key, value and headers (record batch and record framing),
/// counted against the broker's limit; generous, so a record under it is never refused for
/// size.
pub const RECORD_OVERHEAD_BYTES: usize = 128;

/// Headers of the dead-letter record (after the original record's own headers).
pub const DLQ_HEADERS: [&str; 6] = [
    "__ficus.errors.topic",
    "__ficus.errors.table",
    "__ficus.errors.cause",
    "__ficus.errors.message",
    "__ficus.errors.size.bytes",
    "__ficus.errors.value",
];

/// Headers of the placeholder event (after the original record's own headers).
pub const PLACEHOLDER_HEADERS: [&str; 4] = [
    "__ficus.dead_letter.topic",
    "__ficus.dead_letter.cause",
    "__ficus.dead_letter.size.bytes",
    "__ficus.dead_letter.columns",
];

/// What a record costs against a size limit.
pub fn wire_size(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&str, &[u8])]) -> usize {
    key.map_or(0, <[u8]>::len)
        + value.map_or(0, <[u8]>::len)
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + RECORD_OVERHEAD_BYTES
}

/// The placeholder value for a change event `value`, at most `budget` bytes, and the columns
/// replaced (`after.body`, ...). `all_columns` replaces every column's value (a refusal not
/// about size). `None` when `value` is no change event (no `before`/`after` objects, also inside
/// a `{"schema","payload"}` wrapper) or does not fit even with every value replaced.
pub fn placeholder_value(
    value: &[u8],
    budget: usize,
    placeholder: &str,
    all_columns: bool,
) -> Option<(Vec<u8>, Vec<String>)> {
    let mut root: Value = serde_json::from_slice(value).ok()?;
    let wrapped = root.get("schema").is_some() && root.get("payload").is_some_and(Value::is_object);
    let event = if wrapped {
        root.get_mut("payload")?
    } else {
        &mut root
    };
    let mut candidates: Vec<(&'static str, String, usize)> = Vec::new();
    for side in ["before", "after"] {
        if let Some(Value::Object(columns)) = event.get(side) {
            for (name, column) in columns {
                if !column.is_null() {
                    let len = serde_json::to_vec(column).map_or(0, |v| v.len());
                    candidates.push((side, name.clone(), len));
                }
            }
        }
    }
    if candidates.is_empty() {
        return None;
    }
    candidates.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
    let replacement = Value::String(placeholder.to_owned());
    let replacement_len = placeholder.len() + 2;
    let mut size = serde_json::to_vec(&root).ok()?.len();
    let mut replaced = Vec::new();
    for (side, name, len) in candidates {
        if !all_columns && size <= budget {
            break;
        }
        let event = if wrapped {
            root.get_mut("payload")?
        } else {
            &mut root
        };
        if let Some(Value::Object(columns)) = event.get_mut(side)
            && let Some(column) = columns.get_mut(&name)
        {
            *column = replacement.clone();
            size = size + replacement_len - len.min(size);
            replaced.push(format!("{side}.{name}"));
        }
    }
    let bytes = serde_json::to_vec(&root).ok()?;
    (bytes.len() <= budget).then_some((bytes, replaced))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PH: &str = "__debezium_unavailable_value";

    fn event(body: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "before": {"id": 1, "title": "old", "body": "b"},
            "after": {"id": 1, "title": "new", "body": body},
            "source": {"lsn": 42, "table": "docs"},
            "op": "u",
            "ts_ms": 1
        }))
        .unwrap()
    }

    #[test]
    fn the_largest_values_are_replaced_until_the_event_fits() {
        let big = "x".repeat(2_000_000);
        let (bytes, replaced) = placeholder_value(&event(&big), 10_000, PH, false).unwrap();
        assert!(bytes.len() <= 10_000);
        assert_eq!(replaced, vec!["after.body"]);
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["after"]["body"], PH);
        assert_eq!(value["after"]["title"], "new", "small columns stay");
        assert_eq!(value["before"]["body"], "b");
        assert_eq!(value["op"], "u");
        assert_eq!(value["source"]["lsn"], 42);
    }

    #[test]
    fn inside_the_schema_wrapper_the_payload_is_shrunk() {
        let big = "y".repeat(50_000);
        let wrapped = serde_json::to_vec(&serde_json::json!({
            "schema": {"type": "struct"},
            "payload": serde_json::from_slice::<Value>(&event(&big)).unwrap()
        }))
        .unwrap();
        let (bytes, replaced) = placeholder_value(&wrapped, 5_000, PH, false).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["payload"]["after"]["body"], PH);
        assert_eq!(value["schema"]["type"], "struct");
        assert_eq!(replaced, vec!["after.body"]);
    }

    #[test]
    fn every_column_for_a_refusal_not_about_size() {
        let (bytes, replaced) = placeholder_value(&event("small"), 10_000, PH, true).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(replaced.len(), 6);
        assert_eq!(value["after"]["id"], PH);
        assert_eq!(value["before"]["title"], PH);
    }

    #[test]
    fn no_placeholder_for_what_is_no_change_event_or_cannot_fit() {
        assert!(placeholder_value(br#"{"order": 1}"#, 10_000, PH, false).is_none());
        assert!(placeholder_value(b"not json", 10_000, PH, false).is_none());
        assert!(placeholder_value(&event("small"), 20, PH, false).is_none());
    }

    #[test]
    fn the_wire_size_counts_everything() {
        assert_eq!(
            wire_size(Some(b"k"), Some(b"vv"), &[("h", b"xyz")]),
            1 + 2 + 4 + RECORD_OVERHEAD_BYTES
        );
    }
}
