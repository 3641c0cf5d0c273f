//! The one check of a routes file, shared by the proxy's loader ([`crate::reload`]),
//! `ficus routes check`, `ficus routes flip` (before it writes) and the rollout controller: a
//! file it accepts, the proxy loads; a file the proxy would refuse, it refuses with the same
//! problems.
//!
//! Pure but for reading the files the configuration names, as the loader would (`keys_file`,
//! `hs256_secret_file`, `internal_token.key_file`, the TLS certificates, keys and CA files,
//! relative to the routes file's directory): no network (a `jwks_url` is checked for its form,
//! never fetched).

use std::path::Path;
use std::sync::Arc;

use crate::authz::internal::InternalSigner;
use crate::authz::keys::{KeySet, VerifyKey};
use crate::config::{AuthSection, Problem, Problems, RoutesFile, Sections, dotted_name};
use crate::tls::{ClientTls, ServerTls, read_file};

/// A routes file that passed the check, with what its key files held.
pub struct CheckedFile {
    pub file: RoutesFile,
    /// What `[auth]`'s key files held (nothing without `[auth]`).
    pub keys: AuthKeys,
}

/// What `[auth]`'s files held: everything the loader needs to build the authorization, so that
/// building it cannot fail.
#[derive(Default)]
pub struct AuthKeys {
    /// The keys of `keys_file` (empty without one).
    pub static_keys: KeySet,
    /// The secret of `hs256_secret_file`.
    pub hs256: Option<Arc<VerifyKey>>,
    /// The signer of `internal_token.key_file`; `None` without one (the loader then keeps a
    /// key of its own for the process).
    pub internal_signer: Option<InternalSigner>,
}

/// Checks the text of a routes file, reading the files it names from `base_dir` when relative
/// (the routes file's directory). Reports every problem at once.
pub fn check(text: &str, base_dir: &Path) -> Result<CheckedFile, Problems> {
    let mut sections = Sections::parse(text);
    let keys = match &sections.auth {
        Some(auth) => read_keys(auth, base_dir, &mut sections.problems),
        None => AuthKeys::default(),
    };
    read_tls(&mut sections, base_dir);
    place_parity_files(&mut sections, base_dir);
    // The ledger may not exist yet (no rollout ran): only its place is decided here.
    sections.dashboard.ledger_file = base_dir.join(&sections.dashboard.ledger_file);
    let file = sections.into_file()?;
    Ok(CheckedFile { file, keys })
}

/// The directory relative paths of the file at `path` are taken from.
pub fn base_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn read_keys(auth: &AuthSection, base_dir: &Path, problems: &mut Vec<Problem>) -> AuthKeys {
    let static_keys = match &auth.keys_file {
        None => KeySet::default(),
        Some(path) => {
            let path = base_dir.join(path);
            let shown = path.display();
            match std::fs::read(&path) {
                Ok(bytes) => KeySet::from_jwks(&bytes).unwrap_or_else(|e| {
                    problems.push(Problem::new("auth.keys_file", format!("{shown}: {e}")));
                    KeySet::default()
                }),
                Err(e) => {
                    problems.push(Problem::new(
                        "auth.keys_file",
                        format!("reading {shown}: {e}"),
                    ));
                    KeySet::default()
                }
            }
        }
    };
    let hs256 = auth.hs256_secret_file.as_ref().and_then(|path| {
        let path = base_dir.join(path);
        let shown = path.display();
        match std::fs::read(&path) {
            Ok(secret) if secret.trim_ascii().len() >= 32 => Some(Arc::new(VerifyKey {
                algorithm: jsonwebtoken::Algorithm::HS256,
                key: jsonwebtoken::DecodingKey::from_secret(secret.trim_ascii()),
            })),
            Ok(_) => {
                problems.push(Problem::new(
                    "auth.hs256_secret_file",
                    format!("{shown}: the secret must be at least 32 bytes"),
                ));
                None
            }
            Err(e) => {
                problems.push(Problem::new(
                    "auth.hs256_secret_file",
                    format!("reading {shown}: {e}"),
                ));
                None
            }
        }
    });
    let internal_signer = auth
        .internal_token
        .as_ref()
        .and_then(|internal| internal.key_file.as_ref())
        .and_then(|path| {
            let path = base_dir.join(path);
            InternalSigner::from_file(&path.to_string_lossy())
                .map_err(|message| {
                    problems.push(Problem::new("auth.internal_token.key_file", message));
                })
                .ok()
        });
    AuthKeys {
        static_keys,
        hs256,
        internal_signer,
    }
}

/// Reads the TLS files the sections name and builds their configurations into them: the
/// listener's certificate and key, and a client configuration for each `https://` upstream and
/// an `https://` JWKS URL (their CA file, or the system's roots).
fn read_tls(sections: &mut Sections, base_dir: &Path) {
    let problems = &mut sections.problems;
    if let Some(tls) = sections.proxy.as_mut().and_then(|p| p.tls.as_mut()) {
        let cert = read_file(base_dir, &tls.cert_file)
            .map_err(|e| problems.push(Problem::new("proxy.tls.cert_file", e)));
        let key = read_file(base_dir, &tls.key_file)
            .map_err(|e| problems.push(Problem::new("proxy.tls.key_file", e)));
        if let (Ok(cert), Ok(key)) = (cert, key) {
            match ServerTls::new(&cert, &key) {
                Ok(loaded) => tls.loaded = Some(loaded),
                Err(e) => problems.push(Problem::new("proxy.tls", e)),
            }
        }
    }
    for (name, upstream) in &mut sections.upstreams {
        let key = format!("upstreams.{}.ca_file", dotted_name(name));
        let https = upstream.url.scheme.as_str() == "https";
        upstream.tls = client_tls(https, upstream.ca_file.as_deref(), base_dir, &key, problems);
    }
    if let Some(auth) = &mut sections.auth {
        let https = auth.jwks_url.as_ref().is_some_and(|u| u.is_https());
        auth.jwks_tls = client_tls(
            https,
            auth.jwks_ca_file.as_deref(),
            base_dir,
            "auth.jwks_ca_file",
            problems,
        );
    }
}

/// Makes the files routes write (a shadow route's mismatch log, a recorded corpus) absolute
/// against the routes file's directory; a directory that does not exist is a problem (the file
/// itself is created on the first line written).
fn place_parity_files(sections: &mut Sections, base_dir: &Path) {
    let problems = &mut sections.problems;
    for route in &mut sections.routes {
        let key = format!("route.{:?}", route.name);
        let files = [
            ("shadow.log_file", route.shadow.log_file.as_mut()),
            ("record.file", route.record.as_mut().map(|r| &mut r.file)),
        ];
        for (field, path) in files {
            let Some(path) = path else { continue };
            *path = base_dir.join(&*path);
            let dir = path.parent().unwrap_or(Path::new("."));
            if !dir.is_dir() {
                problems.push(Problem::new(
                    format!("{key}.{field}"),
                    format!("{}: the directory does not exist", path.display()),
                ));
            }
        }
    }
}

/// The client TLS of an `https://` URL; a CA file is a problem anywhere else.
fn client_tls(
    https: bool,
    ca_file: Option<&Path>,
    base_dir: &Path,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<ClientTls> {
    if !https {
        if ca_file.is_some() {
            problems.push(Problem::new(key, "only for an https:// URL"));
        }
        return None;
    }
    let ca = match ca_file.map(|path| read_file(base_dir, path)).transpose() {
        Ok(ca) => ca,
        Err(e) => {
            problems.push(Problem::new(key, e));
            return None;
        }
    };
    ClientTls::new(ca.as_deref())
        .map_err(|e| problems.push(Problem::new(key, e)))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[proxy]\ndefault = \"m\"\n[upstreams.m]\nurl = \"http://127.0.0.1:1\"\n";

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ficus-check-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn shown(text: &str, dir: &Path) -> Vec<String> {
        match check(text, dir) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn connection_settings_have_documented_defaults_and_named_problems() {
        let dir = temp_dir();
        let file = check(BASE, &dir).unwrap().file;
        let connections = &file.proxy.connections;
        assert_eq!(connections.handshake_timeout_ms, 10_000);
        assert_eq!(connections.idle_timeout_ms, 60_000);
        assert_eq!(connections.http2_keepalive_interval_ms, 20_000);
        assert_eq!(connections.http2_keepalive_timeout_ms, 10_000);
        assert_eq!(connections.max_connections, None);
        assert!(file.proxy.tls.is_none());

        let text = format!(
            "{BASE}[proxy.connections]\nidle_timeout_ms = 0\nmax_connections = 0\nidle_ms = 5\n"
        );
        let found = shown(&text, &dir);
        assert!(
            found.contains(&"proxy.connections.idle_timeout_ms: must be more than 0".to_owned()),
            "{found:?}"
        );
        assert!(
            found.contains(&"proxy.connections.max_connections: must be more than 0".to_owned()),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("proxy.connections.idle_ms: unknown key")),
            "{found:?}"
        );
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn tls_files_are_read_and_every_problem_named() {
        let dir = temp_dir();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.join("other.pem"), other.serialize_pem()).unwrap();

        let good = format!(
            "{BASE}[proxy.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n\
             [upstreams.s]\nurl = \"https://localhost:1\"\nca_file = \"cert.pem\"\n"
        );
        let file = check(&good, &dir).expect("a good file").file;
        assert!(file.proxy.tls.unwrap().loaded.is_some());
        assert!(file.upstreams["s"].tls.is_some());
        assert!(file.upstreams["m"].tls.is_none(), "http:// needs no TLS");

        let bad = format!(
            "{BASE}[proxy.tls]\ncert_file = \"cert.pem\"\nkey_file = \"other.pem\"\n\
             [upstreams.s]\nurl = \"https://localhost:1\"\nca_file = \"gone.pem\"\n\
             [upstreams.p]\nurl = \"http://localhost:1\"\nca_file = \"cert.pem\"\n\
             [auth]\nissuer = \"i\"\naudience = [\"a\"]\njwks_url = \"https://idp/jwks\"\n\
             jwks_ca_file = \"key.pem\"\n"
        );
        let found = shown(&bad, &dir);
        let at = |key: &str| found.iter().any(|p| p.starts_with(key));
        assert!(
            at("proxy.tls: the certificate and the key do not make a pair"),
            "{found:?}"
        );
        assert!(at("upstreams.s.ca_file: reading "), "{found:?}");
        assert!(
            at("upstreams.p.ca_file: only for an https:// URL"),
            "{found:?}"
        );
        assert!(
            at("auth.jwks_ca_file: no certificate in the file"),
            "{found:?}"
        );
        assert_eq!(found.len(), 4, "{found:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
