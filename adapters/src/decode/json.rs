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

/// Appends a finite `f64` as Java's `Double.toString` writes it, as Kafka Connect's
/// JsonConverter writes a `FLOAT64` (Debezium's `double` columns, `decimal.handling.mode=double`):
/// see [`push_java_scientific`].
pub fn push_java_f64(buf: &mut Vec<u8>, x: f64) {
    push_java_scientific(buf, &format!("{x:e}"));
}

/// Appends a finite `f32` as Java's `Float.toString` writes it (a `FLOAT32`, PostgreSQL's `real`).
pub fn push_java_f32(buf: &mut Vec<u8>, x: f32) {
    push_java_scientific(buf, &format!("{x:e}"));
}

/// Appends a float given in Rust's `{:e}` form (the shortest digits that read back as the same
/// value: `1.2345678e7`, `-1e-6`, `0e0`) as Java prints floats: decimal notation with at least
/// one fractional digit for 10^-3 <= |x| < 10^7 (`100.0`, `0.001`, `-0.0`), otherwise
/// `<d>.<digits>E<exponent>` (`1.0E-6`, `1.2345678E7`). (Java 17's `Double.toString` is not
/// always the shortest form, JDK-4511638; the rare values it writes longer differ.)
fn push_java_scientific(buf: &mut Vec<u8>, sci: &str) {
    let (negative, body) = match sci.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, sci),
    };
    let (mantissa, exponent) = body.split_once('e').unwrap_or((body, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: Vec<u8> = mantissa.bytes().filter(|b| b.is_ascii_digit()).collect();
    if negative {
        buf.push(b'-');
    }
    if digits.iter().all(|&d| d == b'0') {
        buf.extend_from_slice(b"0.0");
    } else if (-3..7).contains(&exponent) {
        if exponent >= 0 {
            let int = exponent as usize + 1;
            if digits.len() <= int {
                buf.extend_from_slice(&digits);
                buf.extend(std::iter::repeat_n(b'0', int - digits.len()));
                buf.extend_from_slice(b".0");
            } else {
                buf.extend_from_slice(&digits[..int]);
                buf.push(b'.');
                buf.extend_from_slice(&digits[int..]);
            }
        } else {
            buf.extend_from_slice(b"0.");
            buf.extend(std::iter::repeat_n(b'0', (-exponent - 1) as usize));
            buf.extend_from_slice(&digits);
        }
    } else {
        buf.push(digits[0]);
        buf.push(b'.');
        match &digits[1..] {
            [] => buf.push(b'0'),
            rest => buf.extend_from_slice(rest),
        }
        buf.push(b'E');
        push_i64(buf, i64::from(exponent));
    }
}

/// Appends `"name":` for an object member.
pub fn push_key(buf: &mut Vec<u8>, name: &str) {
    push_str(buf, name);
    buf.push(b':');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Java's `Double.toString` / `Float.toString` of the same values (checked with Java 17).
    #[test]
    fn floats_are_written_as_java_writes_them() {
        let double = |x: f64| {
            let mut buf = Vec::new();
            push_java_f64(&mut buf, x);
            String::from_utf8(buf).unwrap()
        };
        for (x, java) in [
            (100.0, "100.0"),
            (2.25, "2.25"),
            (-0.5, "-0.5"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.001, "0.001"),
            (0.000_999, "9.99E-4"),
            (1e-6, "1.0E-6"),
            (1e-7, "1.0E-7"),
            (9_999_999.0, "9999999.0"),
            (10_000_000.0, "1.0E7"),
            (12_345_678.9, "1.23456789E7"),
            (12_345.678, "12345.678"),
            (1e300, "1.0E300"),
            (-1.5e-300, "-1.5E-300"),
        ] {
            assert_eq!(double(x), java, "{x:e}");
        }
        let float = |x: f32| {
            let mut buf = Vec::new();
            push_java_f32(&mut buf, x);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(float(7.0), "7.0");
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(1.5e10), "1.5E10");
        assert_eq!(float(3.4028235e38), "3.4028235E38");
    }

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
