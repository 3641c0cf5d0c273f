//! The process environment behind a trait (linkerd's `app/src/env.rs`): the configuration
//! loader and the log filter read it through [`Env`], so tests pass a map instead of calling
//! `std::env::set_var`.

use std::collections::{BTreeMap, HashMap};

/// Where environment variables come from.
pub trait Env {
    /// The value of `name`, if set (and valid UTF-8).
    fn get(&self, name: &str) -> Option<String>;
    /// Every variable whose name starts with `prefix`, sorted by name.
    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<String> {
        (**self).get(name)
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        (**self).with_prefix(prefix)
    }
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut vars: Vec<_> = std::env::vars()
            .filter(|(name, _)| name.starts_with(prefix))
            .collect();
        vars.sort();
        vars
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut vars: Vec<_> = self
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort();
        vars
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_answer_by_prefix_in_name_order() {
        let pairs = [
            ("FICUS_A__X", "1"),
            ("FICUS_B__Y", "2"),
            ("FICUS_A__W", "3"),
        ];
        let hash: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let tree: BTreeMap<String, String> = hash.clone().into_iter().collect();
        for env in [&hash as &dyn Env, &tree] {
            assert_eq!(
                env.with_prefix("FICUS_A__"),
                vec![
                    ("FICUS_A__W".to_owned(), "3".to_owned()),
                    ("FICUS_A__X".to_owned(), "1".to_owned())
                ]
            );
            assert_eq!(env.get("FICUS_B__Y").as_deref(), Some("2"));
            assert_eq!(env.get("FICUS_C"), None);
        }
    }
}
