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
