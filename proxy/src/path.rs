//! The canonical path, read before routing (see [`crate::handler`]): the request's path made
//! canonical the way RFC 3986 §6.2.2 says, so that the route is chosen on the path an upstream
//! acts on, and that same path is the one forwarded. Pure: a raw path in, its canonical form
//! (or the reason it has none) out.
//!
//! The steps, segment by segment:
//! 1. **percent-encoding**: every `%` must start a triplet of two hex digits (else refused);
//!    triplets of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`%7E` → `~`,
//!    `%2e` → `.`), every other triplet is kept, with upper-case hex (`%2f` → `%2F`);
//! 2. characters a URI may not carry raw (non-ASCII, `"`, `<`, `>`, `[`, `]`, `^`, `` ` ``, `{`,
//!    `|`, `}`) are percent-encoded; a raw `\` becomes `%5C` (and counts as an encoded
//!    separator, below);
//! 3. **empty segments** are dropped: runs of `/` merge into one, as nginx (`merge_slashes`, on
//!    by default) and Envoy (`merge_slashes`) do. RFC 3986 keeps them significant; ficus does
//!    not, because the upstreams it fronts mostly merge them, and `//admin` must be routed as
//!    the `/admin` they serve. A trailing `/` is kept (`/api/` is not `/api`);
//! 4. **dot segments** are removed (RFC 3986 §5.2.4) after the decoding, so `%2e%2e` is `..`
//!    and cannot climb past a route's prefix unseen.
//!
//! Then each canonical segment is read the way the most credulous upstream would: decoded
//! again and again (a double-decoding framework turns `%252e` into `.`), parameters after `;`
//! dropped (Tomcat serves `/public/..;/admin` as `/admin`). Refused whatever the route:
//! a segment that reads as `.` or `..`, a NUL or other control character, encodings nested too
//! deep to read. Left for the route to decide ([`Canonical::encoded_separator`]): a `/` or `\`
//! inside a segment (`%2F`, `%5C`, `%252F`, raw `\`): an upstream that decodes it sees other
//! segments than the route did, so it is refused unless the route allows encoded slashes.

use std::fmt::Write as _;

/// How many rounds of decoding a segment is read through before it is called too deep.
const DECODE_ROUNDS: usize = 4;

/// A path in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// Starts with `/`; no empty, `.` or `..` segment; `%XX` only for what is not unreserved,
    /// with upper-case hex. What routes match and what is forwarded.
    pub path: String,
    /// A segment holds a `/` or `\` once decoded (`%2F`, `%5C`, a raw `\`, or their double
    /// encodings): refused unless the route allows encoded slashes.
    pub encoded_separator: bool,
}

/// Why a path has no canonical form: the request is refused with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target must be a path starting with `/`")]
    NotAPath,
    #[error("invalid percent-encoding at byte {0} of the path (`%` must start `%XX`, hex)")]
    InvalidPercentEncoding(usize),
    #[error("the path holds a NUL or another control character (encoded or not)")]
    ControlCharacter,
    #[error("the path has a segment an upstream would read as `.` or `..` (`{0}`)")]
    DisguisedDotSegment(String),
    #[error("the path has a segment percent-encoded more than 4 times over")]
    TooDeeplyEncoded,
}

/// The canonical form of a request's path (`uri.path()`: no query).
pub fn canonicalize(raw: &str) -> Result<Canonical, PathError> {
    if is_plainly_canonical(raw) {
        return Ok(Canonical {
            path: raw.to_owned(),
            encoded_separator: false,
        });
    }
    let raw = raw.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAPath);
    }
    let mut segments: Vec<String> = Vec::new();
    let mut encoded_separator = false;
    // Whether the canonical path ends in `/`: the raw one does, or it ends in a dot segment.
    let mut trailing_slash = false;
    let mut offset = 1;
    for piece in raw[1..].split(|&b| b == b'/') {
        let at = offset;
        offset += piece.len() + 1;
        if piece.is_empty() {
            // An empty segment: merged away; if it is the last, the path ends in `/`.
            trailing_slash = true;
            continue;
        }
        let (segment, separator) = normalize_segment(piece, at)?;
        // Even in a segment a later `..` removes: an upstream that decodes first splits it,
        // and its `..` removes only the last part.
        encoded_separator |= separator || holds_separator(&segment);
        match segment.as_str() {
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                check_segment(&segment)?;
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut path = String::with_capacity(raw.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        path.push('/');
    }
    Ok(Canonical {
        path,
        encoded_separator,
    })
}

/// The common case, checked in one pass: a path with nothing the steps would change (no `%`,
/// no `\`, no character to encode, no empty segment, no segment starting with `.`) is its
/// own canonical form.
fn is_plainly_canonical(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.first() == Some(&b'/')
        && bytes
            .windows(2)
            .all(|pair| pair[0] != b'/' || (pair[1] != b'/' && pair[1] != b'.'))
        && bytes.iter().all(|&b| b == b'/' || is_path_char(b))
}

/// Step 1 and 2 for one segment (no `/` in it): its canonical text, and whether it holds an
/// encoded separator. `at` is the segment's byte offset in the path (for messages).
fn normalize_segment(piece: &[u8], at: usize) -> Result<(String, bool), PathError> {
    let mut out = String::with_capacity(piece.len());
    let mut separator = false;
    let mut i = 0;
    while i < piece.len() {
        let byte = piece[i];
        if byte == b'%' {
            let decoded = piece
                .get(i + 1..i + 3)
                .and_then(hex_pair)
                .ok_or(PathError::InvalidPercentEncoding(at + i))?;
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                if is_control(decoded) {
                    return Err(PathError::ControlCharacter);
                }
                separator |= decoded == b'/' || decoded == b'\\';
                push_encoded(&mut out, decoded);
            }
            i += 3;
            continue;
        }
        if is_control(byte) || byte == b' ' {
            return Err(PathError::ControlCharacter);
        }
        if byte == b'\\' {
            separator = true;
            push_encoded(&mut out, byte);
        } else if is_path_char(byte) {
            out.push(char::from(byte));
        } else {
            push_encoded(&mut out, byte);
        }
        i += 1;
    }
    Ok((out, separator))
}

/// The segment as a credulous upstream reads it: refused when it reads as a dot segment or
/// holds a control character.
fn check_segment(segment: &str) -> Result<(), PathError> {
    let mut text = segment.as_bytes().to_vec();
    for round in 0..=DECODE_ROUNDS {
        // Tomcat and other servlet containers drop `;parameters` before resolving dots.
        let before_parameters = text.split(|&b| b == b';').next().unwrap_or_default();
        if before_parameters == b"." || before_parameters == b".." {
            return Err(PathError::DisguisedDotSegment(segment.to_owned()));
        }
        if text.iter().any(|&b| is_control(b)) {
            return Err(PathError::ControlCharacter);
        }
        match decode_once(&text) {
            None => return Ok(()),
            Some(_) if round == DECODE_ROUNDS => break,
            Some(next) => text = next,
        }
    }
    Err(PathError::TooDeeplyEncoded)
}

/// Whether a canonical segment holds a `/` or `\` through any number of decodings.
fn holds_separator(segment: &str) -> bool {
    let mut text = segment.as_bytes().to_vec();
    loop {
        if text.contains(&b'/') || text.contains(&b'\\') {
            return true;
        }
        match decode_once(&text) {
            Some(next) => text = next,
            None => return false,
        }
    }
}

/// One round of percent-decoding (invalid triplets left as they are), or `None` when there
/// was nothing to decode.
fn decode_once(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut changed = false;
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%'
            && let Some(byte) = text.get(i + 1..i + 3).and_then(hex_pair)
        {
            out.push(byte);
            changed = true;
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    changed.then_some(out)
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

fn push_encoded(out: &mut String, byte: u8) {
    let _ = write!(out, "%{byte:02X}");
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// What RFC 3986 lets a path segment carry raw: unreserved, sub-delims, `:` and `@`.
fn is_path_char(byte: u8) -> bool {
    is_unreserved(byte) || b"!$&'()*+,;=:@".contains(&byte)
}

fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> String {
        match canonicalize(raw) {
            Ok(c) => c.path,
            Err(e) => panic!("{raw}: {e}"),
        }
    }

    #[test]
    fn dot_segments_are_removed_after_decoding() {
        let cases = [
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/public/./admin", "/public/admin"),
            ("/public/%2e/admin", "/public/admin"),
            ("/../../admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/..", "/"),
            ("/", "/"),
            ("/a/b/../../c/./d", "/c/d"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/c", "/a/..b/c"),
        ];
        for (raw, expected) in cases {
            assert_eq!(path(raw), expected, "{raw}");
        }
    }

    #[test]
    fn unreserved_characters_are_decoded_and_the_rest_kept_in_upper_case() {
        let cases = [
            ("/%67etonly/1", "/getonly/1"),
            ("/%41%5a%61%7A%30%39%2D%2E%5F%7E", "/AZaz09-._~"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb%23c", "/a%3Fb%23c"),
            ("/100%25", "/100%25"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/café", "/caf%C3%A9"),
            ("/a[b]", "/a%5Bb%5D"),
            ("/a{b}|c", "/a%7Bb%7D%7Cc"),
            ("/a:b@c;d=e!$&'()*+,", "/a:b@c;d=e!$&'()*+,"),
        ];
        for (raw, expected) in cases {
            assert_eq!(path(raw), expected, "{raw}");
        }
    }

    #[test]
    fn empty_segments_merge_and_a_trailing_slash_stays() {
        let cases = [
            ("//admin", "/admin"),
            ("/public//admin", "/public/admin"),
            ("/api/", "/api/"),
            ("/api//", "/api/"),
            ("///", "/"),
            ("/a//..//b", "/b"),
        ];
        for (raw, expected) in cases {
            assert_eq!(path(raw), expected, "{raw}");
        }
    }

    #[test]
    fn separators_inside_segments_are_flagged_for_the_route() {
        for raw in [
            "/public/..%2fadmin",
            "/public/..%2Fadmin",
            "/public/..%5cadmin",
            "/public\\..\\admin",
            "/files/a%252Fb",
            "/files/a%25252f",
        ] {
            let canonical = canonicalize(raw).unwrap();
            assert!(canonical.encoded_separator, "{raw}: {canonical:?}");
        }
        assert_eq!(path("/public/..%2fadmin"), "/public/..%2Fadmin");
        assert_eq!(path("/public\\admin"), "/public%5Cadmin");
        for raw in ["/a/b", "/a%2Db", "/a/%2e%2e/b", "/a%25b"] {
            assert!(!canonicalize(raw).unwrap().encoded_separator, "{raw}");
        }
        // Even when a `..` removes it: `/a%2Fb/../c` is `/a/c` to nginx, `/c` to the route.
        assert!(canonicalize("/a%2Fb/../c").unwrap().encoded_separator);
    }

    #[test]
    fn what_has_no_single_meaning_is_refused() {
        let cases = [
            ("/a%zz", PathError::InvalidPercentEncoding(2)),
            ("/a%2", PathError::InvalidPercentEncoding(2)),
            ("/a/%", PathError::InvalidPercentEncoding(3)),
            ("/a%00b", PathError::ControlCharacter),
            ("/a%0d%0aSet-Cookie:x", PathError::ControlCharacter),
            ("/a%7f", PathError::ControlCharacter),
            ("/a%2500", PathError::ControlCharacter),
            (
                "/public/%252e%252e/admin",
                PathError::DisguisedDotSegment("%252e%252e".into()),
            ),
            (
                "/public/..;/admin",
                PathError::DisguisedDotSegment("..;".into()),
            ),
            (
                "/public/.;x/admin",
                PathError::DisguisedDotSegment(".;x".into()),
            ),
            (
                "/public/%2e%2e;jsessionid=1/admin",
                PathError::DisguisedDotSegment("..;jsessionid=1".into()),
            ),
            ("/a/%2525252525", PathError::TooDeeplyEncoded),
            ("/a/%252525252e", PathError::TooDeeplyEncoded),
            ("admin", PathError::NotAPath),
            ("", PathError::NotAPath),
            ("*", PathError::NotAPath),
        ];
        for (raw, expected) in cases {
            assert_eq!(canonicalize(raw), Err(expected), "{raw}");
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_steps() {
        for raw in [
            "/",
            "/a",
            "/a/b/",
            "/api/people/42",
            "/a.b/c.d",
            "/a:b@c;d=e",
            "/a-._~",
        ] {
            assert!(is_plainly_canonical(raw), "{raw}");
            let slow = canonicalize(&format!("{raw}%41")).unwrap();
            assert_eq!(slow.path, format!("{raw}A"), "{raw}");
        }
        for raw in [
            "//a",
            "/a/./b",
            "/.well-known",
            "/a%41",
            "/a\\b",
            "/a{b",
            "/a/..",
            "/é",
        ] {
            assert!(!is_plainly_canonical(raw), "{raw}");
        }
    }

    /// How nginx (and most servers that decode) sees a raw path: every triplet decoded once,
    /// slashes merged, dot segments resolved.
    fn nginx_view(raw: &str) -> String {
        let decoded = decode_once(raw.as_bytes()).unwrap_or_else(|| raw.as_bytes().to_vec());
        let decoded = String::from_utf8_lossy(&decoded).into_owned();
        let mut segments: Vec<&str> = Vec::new();
        let mut trailing = false;
        for segment in decoded[1..].split('/') {
            trailing = true;
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => {
                    segments.push(s);
                    trailing = false;
                }
            }
        }
        let mut out: String = segments.iter().map(|s| format!("/{s}")).collect();
        if trailing || out.is_empty() {
            out.push('/');
        }
        out
    }

    /// `%xx` → `%XX` where `xx` is hex.
    fn upper_hex(text: &str) -> String {
        let mut out = text.to_owned();
        for (i, _) in text.match_indices('%') {
            if let Some(pair) = text.get(i + 1..i + 3)
                && pair.bytes().all(|b| b.is_ascii_hexdigit())
            {
                out.replace_range(i + 1..i + 3, &pair.to_uppercase());
            }
        }
        out
    }

    /// A random path from pieces chosen to collide: dots, slashes and their encodings.
    fn random_path(rng: &mut impl rand::Rng) -> String {
        const PIECES: [&str; 30] = [
            "/", "/", "/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", "%25", "%252e",
            "%252f", "a", "b", "admin", "%61", "%7e", "~", ";", ";x", "%00", "%zz", "%", "%4", "é",
            "%c3%a9", "{", "%20",
        ];
        let len = rng.gen_range(0..10);
        let mut path = String::from("/");
        for _ in 0..len {
            path.push_str(PIECES[rng.gen_range(0..PIECES.len())]);
        }
        path
    }

    /// Properties over many random paths: the canonical form is a fixed point, has the shape
    /// it promises, and, when the route would accept it, an upstream that decodes and
    /// normalizes (nginx) sees exactly the path the route was chosen on.
    #[test]
    fn properties_hold_over_random_paths() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x_f1c05);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let raw = random_path(&mut rng);
            let Ok(canonical) = canonicalize(&raw) else {
                continue;
            };
            accepted += 1;
            let again = canonicalize(&canonical.path).expect("a canonical path is accepted");
            assert_eq!(again.path, canonical.path, "not a fixed point: {raw}");
            // (The flag may go: a separator in a segment a `..` removed is not forwarded.)
            assert!(
                !again.encoded_separator || canonical.encoded_separator,
                "{raw}"
            );
            let p = &canonical.path;
            assert!(p.starts_with('/') && !p.contains("//"), "{raw} -> {p}");
            for segment in p[1..].split('/') {
                assert!(segment != "." && segment != "..", "{raw} -> {p}");
            }
            for (i, _) in p.match_indices('%') {
                let hex = &p[i + 1..i + 3];
                let byte = u8::from_str_radix(hex, 16).expect("hex");
                assert_eq!(hex, hex.to_uppercase(), "{raw} -> {p}");
                assert!(!is_unreserved(byte), "{raw} -> {p}: {hex} left encoded");
            }
            if !canonical.encoded_separator {
                let decoded = decode_once(p.as_bytes()).unwrap_or_else(|| p.as_bytes().to_vec());
                let decoded = String::from_utf8_lossy(&decoded).into_owned();
                assert_eq!(
                    nginx_view(p),
                    decoded,
                    "the upstream normalizes the forwarded path further: {raw} -> {p}"
                );
                // Only the case of hex digits nested in a `%25` may differ.
                assert_eq!(
                    upper_hex(&nginx_view(&raw)),
                    upper_hex(&decoded),
                    "the upstream sees another path than the route: {raw} -> {p}"
                );
            }
        }
        assert!(
            accepted > 5_000,
            "only {accepted} accepted: the generator is off"
        );
    }
}
