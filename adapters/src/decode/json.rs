//! A minimal JSON writer into a byte buffer: the hot path builds envelopes by appending, with no
//! intermediate value tree.

/// Appends `s` as a JSON string (quoted, escaped).
pub fn push_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0..=0x1f => None,
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => buf.extend_from_slice(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[(b >> 4) as usize]);
                buf.push(HEX[(b & 0xf) as usize]);
            }
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// Appends raw bytes as a JSON string, replacing invalid UTF-8.
pub fn push_bytes_as_str(buf: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => push_str(buf, s),
        Err(_) => push_str(buf, &String::from_utf8_lossy(bytes)),
    }
}

/// Appends an integer.
pub fn push_i64(buf: &mut Vec<u8>, n: i64) {
    use std::io::Write;
    let _ = write!(buf, "{n}");
}

/// Appends `"name":` for an object member.
pub fn push_key(buf: &mut Vec<u8>, name: &str) {
    push_str(buf, name);
    buf.push(b':');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(input: &str) -> String {
        let mut buf = Vec::new();
        push_str(&mut buf, input);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn strings_round_trip_through_serde_json() {
        for input in [
            "plain",
            "quote \" and backslash \\",
            "lines\nand\ttabs\r",
            "control \u{1} \u{1f} \u{8} \u{c}",
            "unicode é 😀",
            "",
        ] {
            let encoded = s(input);
            let decoded: String = serde_json::from_str(&encoded).unwrap();
            assert_eq!(decoded, input, "{encoded}");
        }
    }
}
