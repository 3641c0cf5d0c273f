//! The one configuration loader of every `ficus` command: defaults (the settings type's serde
//! defaults), then a TOML file, then `FICUS_<SECTION>__<KEY>` environment variables, then flags,
//! each layer overriding the one before, key by key.
//!
//! `FICUS_CDC__KAFKA__BROKERS=h:9092` sets `kafka.brokers` of section `cdc`: `__` separates the
//! levels, names are lowercased. Values from the environment and flags are text that the target
//! field's type parses (`"10"` is a number for a `u64` and stays text for a `String`; a list
//! field splits on commas: `FICUS_CDC__TABLES=public.a,public.b`).
//!
//! The environment is passed in ([`Env`]), never read globally, so tests pass a map. An error
//! names the dotted key and where its value came from (`listen: invalid socket address syntax
//! (from environment variable FICUS_PROXY__LISTEN)`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use crate::env::Env;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The settings type's default.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
    /// A command-line flag (its name, `--listen`).
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// One problem: the dotted key (empty for the whole file), what is wrong, where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    pub source: Source,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{} ({})", self.message, self.source)
        } else if self.source == Source::Default {
            write!(f, "{}: {}", self.key, self.message)
        } else {
            write!(f, "{}: {} (from {})", self.key, self.message, self.source)
        }
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(Problem),
}

impl ConfigError {
    /// The problem as `key: message (from source)`, or the file error.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::Invalid(problem) => Some(problem),
            _ => None,
        }
    }
}

/// Builds one section's settings from its layers. See the module documentation.
pub struct Loader<'a> {
    section: String,
    file: Option<PathBuf>,
    env: Option<&'a dyn Env>,
    flags: Vec<(String, String, String)>,
}

impl<'a> Loader<'a> {
    /// A loader for `section` (`proxy` reads `FICUS_PROXY__*`).
    pub fn new(section: &str) -> Self {
        Self {
            section: section.to_owned(),
            file: None,
            env: None,
            flags: Vec::new(),
        }
    }

    /// The TOML file (a missing file is an error naming it).
    pub fn file(mut self, path: Option<&Path>) -> Self {
        self.file = path.map(Path::to_path_buf);
        self
    }

    /// The environment to read `FICUS_<SECTION>__*` from.
    pub fn env(mut self, env: &'a dyn Env) -> Self {
        self.env = Some(env);
        self
    }

    /// A flag's value for the dotted `key`, when given (`flag` is its name, for errors).
    pub fn flag(mut self, key: &str, flag: &str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.flags
                .push((key.to_owned(), flag.to_owned(), value.to_string()));
        }
        self
    }

    /// The environment prefix of the section: `FICUS_PROXY__`.
    pub fn env_prefix(&self) -> String {
        format!("FICUS_{}__", self.section.to_ascii_uppercase())
    }

    /// Merges the layers and deserializes `T`.
    pub fn load<T: DeserializeOwned>(self) -> Result<T, ConfigError> {
        let prefix = self.env_prefix();
        let mut root = Node::Table(BTreeMap::new());
        let mut sources: BTreeMap<String, Source> = BTreeMap::new();
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string().trim_end().to_owned(),
            })?;
            for (key, value) in table {
                record_file_sources(&key, &value, path, &mut sources);
                root.set(&[key], Node::from_toml(value));
            }
        }
        if let Some(env) = self.env {
            for (name, value) in env.with_prefix(&prefix) {
                let path: Vec<String> = name[prefix.len()..]
                    .split("__")
                    .map(str::to_ascii_lowercase)
                    .collect();
                if path.iter().any(String::is_empty) {
                    return Err(ConfigError::Invalid(Problem {
                        key: String::new(),
                        message: "not a setting name (empty level between `__`)".to_owned(),
                        source: Source::Env(name),
                    }));
                }
                sources.insert(path.join("."), Source::Env(name));
                root.set(&path, Node::Text(value));
            }
        }
        for (key, flag, value) in self.flags {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            sources.insert(key, Source::Flag(flag));
            root.set(&path, Node::Text(value));
        }
        serde_path_to_error::deserialize(root).map_err(|error| {
            let mut key = error.path().to_string();
            if key == "." {
                key.clear();
            }
            let message = error.into_inner().0;
            // Name an unknown field itself, not only its parent.
            if let Some(field) = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                && key.rsplit('.').next() != Some(field)
            {
                key = if key.is_empty() {
                    field.to_owned()
                } else {
                    format!("{key}.{field}")
                };
            }
            let mut message = message;
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                key = if key.is_empty() {
                    field.to_owned()
                } else {
                    format!("{key}.{field}")
                };
                message = format!(
                    "required: set it in the file or with {prefix}{}",
                    key.replace('.', "__").to_ascii_uppercase()
                );
            }
            let source = source_of(&key, &sources);
            ConfigError::Invalid(Problem {
                key,
                message,
                source,
            })
        })
    }
}

/// The source of `key`, or of its closest parent that has one (a whole table from the file).
fn source_of(key: &str, sources: &BTreeMap<String, Source>) -> Source {
    let mut key = key;
    loop {
        // `outbox[0].table` is recorded under `outbox`.
        let plain = key.split('[').next().unwrap_or(key);
        if let Some(source) = sources.get(plain) {
            return source.clone();
        }
        match key.rsplit_once('.') {
            Some((parent, _)) => key = parent,
            None => return Source::Default,
        }
    }
}

fn record_file_sources(
    key: &str,
    value: &toml::Value,
    path: &Path,
    sources: &mut BTreeMap<String, Source>,
) {
    sources.insert(key.to_owned(), Source::File(path.to_path_buf()));
    if let toml::Value::Table(table) = value {
        for (child, value) in table {
            record_file_sources(&format!("{key}.{child}"), value, path, sources);
        }
    }
}

/// The merged layers: tables from any layer, leaves from the file (typed TOML) or text (the
/// environment, flags) that the target type parses.
#[derive(Debug)]
enum Node {
    Table(BTreeMap<String, Node>),
    Toml(toml::Value),
    Text(String),
}

impl Node {
    fn from_toml(value: toml::Value) -> Self {
        match value {
            toml::Value::Table(table) => Node::Table(
                table
                    .into_iter()
                    .map(|(k, v)| (k, Node::from_toml(v)))
                    .collect(),
            ),
            other => Node::Toml(other),
        }
    }

    /// Sets the value at `path`, turning leaves on the way into tables.
    fn set(&mut self, path: &[String], value: Node) {
        let Some((first, rest)) = path.split_first() else {
            *self = value;
            return;
        };
        if !matches!(self, Node::Table(_)) {
            *self = Node::Table(BTreeMap::new());
        }
        let Node::Table(table) = self else {
            unreachable!("made a table above")
        };
        table
            .entry(first.clone())
            .or_insert_with(|| Node::Table(BTreeMap::new()))
            .set(rest, value);
    }
}

/// A deserialization message.
#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

fn from_toml(error: toml::de::Error) -> Error {
    Error(error.message().to_owned())
}

macro_rules! parse_text {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                match self {
                    Node::Text(text) => match text.trim().parse::<$ty>() {
                        Ok(value) => visitor.$visit(value),
                        Err(_) => Err(de::Error::invalid_value(de::Unexpected::Str(&text), &visitor)),
                    },
                    Node::Toml(value) => value.$method(visitor).map_err(from_toml),
                    table @ Node::Table(_) => table.deserialize_any(visitor),
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Node {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Table(table) => {
                visitor.visit_map(de::value::MapDeserializer::new(table.into_iter()))
            }
            Node::Toml(value) => value.deserialize_any(visitor).map_err(from_toml),
            Node::Text(text) => visitor.visit_string(text),
        }
    }

    parse_text! {
        deserialize_bool => visit_bool: bool,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
        deserialize_char => visit_char: char,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Text(text) => {
                let items: Vec<Node> = text
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Node::Text(item.to_owned()))
                    .collect();
                visitor.visit_seq(de::value::SeqDeserializer::new(items.into_iter()))
            }
            Node::Toml(value) => value.deserialize_seq(visitor).map_err(from_toml),
            table @ Node::Table(_) => table.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self {
            Node::Text(text) => {
                visitor.visit_enum(IntoDeserializer::<Error>::into_deserializer(text))
            }
            Node::Toml(value) => value
                .deserialize_enum(name, variants, visitor)
                .map_err(from_toml),
            table @ Node::Table(_) => table.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        i128 u128 str string bytes byte_buf unit unit_struct tuple tuple_struct map struct
        identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, Error> for Node {
    type Deserializer = Node;

    fn into_deserializer(self) -> Node {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        #[serde(default = "default_listen")]
        listen: SocketAddr,
        #[serde(default)]
        name: String,
        #[serde(default)]
        workers: u64,
        #[serde(default)]
        verbose: bool,
        #[serde(default)]
        tables: Vec<String>,
        #[serde(default)]
        mode: Mode,
        #[serde(default)]
        topic: Option<String>,
        #[serde(default)]
        kafka: Kafka,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Kafka {
        #[serde(default)]
        brokers: String,
        #[serde(default)]
        partitions: i32,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        #[default]
        Initial,
        WhenNeeded,
    }

    fn default_listen() -> SocketAddr {
        "127.0.0.1:8000".parse().unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    struct TempFile(PathBuf);
    impl TempFile {
        fn new(text: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "ficus-telemetry-config-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn nothing_given_means_the_defaults() {
        let settings: Settings = Loader::new("test").load().unwrap();
        assert_eq!(settings.listen, default_listen());
        assert_eq!(settings.workers, 0);
        assert_eq!(settings.mode, Mode::Initial);
        assert_eq!(settings.topic, None);
    }

    #[test]
    fn file_then_environment_then_flags() {
        let file = TempFile::new(
            "listen = \"127.0.0.1:1\"\nname = \"file\"\nworkers = 2\n[kafka]\nbrokers = \"f:1\"\npartitions = 3\n",
        );
        let env = env(&[
            ("FICUS_TEST__NAME", "env"),
            ("FICUS_TEST__WORKERS", "4"),
            ("FICUS_TEST__KAFKA__BROKERS", "e:1"),
            ("FICUS_OTHER__NAME", "not ours"),
        ]);
        let settings: Settings = Loader::new("test")
            .file(Some(&file.0))
            .env(&env)
            .flag("workers", "--workers", Some(8))
            .flag("name", "--name", None::<String>)
            .load()
            .unwrap();
        assert_eq!(settings.listen, "127.0.0.1:1".parse().unwrap(), "file");
        assert_eq!(settings.name, "env", "the environment over the file");
        assert_eq!(settings.workers, 8, "a flag over the environment");
        assert_eq!(
            settings.kafka.brokers, "e:1",
            "a nested key from the environment"
        );
        assert_eq!(settings.kafka.partitions, 3, "its sibling stays the file's");
    }

    #[test]
    fn environment_text_takes_the_field_type() {
        let env = env(&[
            ("FICUS_TEST__NAME", "10"),
            ("FICUS_TEST__VERBOSE", "true"),
            ("FICUS_TEST__TABLES", "public.a, public.b"),
            ("FICUS_TEST__MODE", "when_needed"),
            ("FICUS_TEST__TOPIC", "t1"),
            ("FICUS_TEST__KAFKA__PARTITIONS", "-1"),
        ]);
        let settings: Settings = Loader::new("test").env(&env).load().unwrap();
        assert_eq!(settings.name, "10", "digits stay text for a String");
        assert!(settings.verbose);
        assert_eq!(settings.tables, vec!["public.a", "public.b"]);
        assert_eq!(settings.mode, Mode::WhenNeeded);
        assert_eq!(settings.topic.as_deref(), Some("t1"));
        assert_eq!(settings.kafka.partitions, -1);
    }

    #[test]
    fn errors_name_the_key_and_the_variable() {
        let env = env(&[("FICUS_TEST__KAFKA__PARTITIONS", "many")]);
        let error = Loader::new("test")
            .env(&env)
            .load::<Settings>()
            .unwrap_err();
        let problem = error.problem().expect("a problem");
        assert_eq!(problem.key, "kafka.partitions");
        assert_eq!(
            problem.source,
            Source::Env("FICUS_TEST__KAFKA__PARTITIONS".to_owned())
        );
        let text = error.to_string();
        assert!(text.contains("many"), "{text}");
        assert!(
            text.starts_with("kafka.partitions: ")
                && text.ends_with("(from environment variable FICUS_TEST__KAFKA__PARTITIONS)"),
            "{text}"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_flag() {
        let file = TempFile::new("[kafka]\npartitions = \"three\"\n");
        let error = Loader::new("test")
            .file(Some(&file.0))
            .load::<Settings>()
            .unwrap_err();
        let problem = error.problem().expect("a problem");
        assert_eq!(problem.key, "kafka.partitions");
        assert_eq!(problem.source, Source::File(file.0.clone()));

        let error = Loader::new("test")
            .flag("listen", "--listen", Some("nowhere"))
            .load::<Settings>()
            .unwrap_err();
        let problem = error.problem().expect("a problem");
        assert_eq!(problem.key, "listen");
        assert_eq!(problem.source, Source::Flag("--listen".to_owned()));
    }

    #[test]
    fn unknown_keys_are_named_with_their_source() {
        let env = env(&[("FICUS_TEST__KAFKA__BROKERZ", "x")]);
        let error = Loader::new("test")
            .env(&env)
            .load::<Settings>()
            .unwrap_err();
        let problem = error.problem().expect("a problem");
        assert_eq!(problem.key, "kafka.brokerz");
        assert_eq!(
            problem.source,
            Source::Env("FICUS_TEST__KAFKA__BROKERZ".to_owned())
        );

        let file = TempFile::new("nmae = \"x\"\n");
        let error = Loader::new("test")
            .file(Some(&file.0))
            .load::<Settings>()
            .unwrap_err();
        let problem = error.problem().expect("a problem");
        assert_eq!(problem.key, "nmae");
        assert_eq!(problem.source, Source::File(file.0.clone()));
    }

    #[derive(Debug, Deserialize)]
    struct Required {
        #[allow(dead_code)]
        database_url: String,
    }

    #[test]
    fn a_missing_required_key_says_how_to_set_it() {
        let error = Loader::new("test").load::<Required>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "database_url: required: set it in the file or with FICUS_TEST__DATABASE_URL"
        );
    }

    #[test]
    fn a_missing_or_broken_file_is_named() {
        let error = Loader::new("test")
            .file(Some(Path::new("/nonexistent/ficus.toml")))
            .load::<Settings>()
            .unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/ficus.toml"),
            "{error}"
        );

        let file = TempFile::new("listen = \n");
        let error = Loader::new("test")
            .file(Some(&file.0))
            .load::<Settings>()
            .unwrap_err();
        assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
        assert!(error.to_string().contains(&file.0.display().to_string()));
    }

    #[test]
    fn an_empty_level_is_refused() {
        let env = env(&[("FICUS_TEST__KAFKA____BROKERS", "x")]);
        let error = Loader::new("test")
            .env(&env)
            .load::<Settings>()
            .unwrap_err();
        assert!(
            error.to_string().contains("FICUS_TEST__KAFKA____BROKERS"),
            "{error}"
        );
    }
}
