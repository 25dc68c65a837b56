//! The config file: `config.toml` in the platform config directory
//! (`~/.config/fulmar/` on Linux). It picks a theme and rebinds keys:
//!
//! ```toml
//! theme = "colour-blind"   # default, light, colour-blind
//!
//! [keys.unikernels]
//! destroy = ["D", "delete"] # replaces the default `x`
//! ```
//!
//! A file with a mistake is refused as a whole, with the reason: fulmar
//! never runs with half a config.

use crate::ui::keymap::{BindError, Context, KeyMap};
use crate::ui::theme::ThemeName;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// What the config file settles.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub theme: ThemeName,
    pub keys: KeyMap,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {source}fix the file or move it aside", path.display())]
    Syntax {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{}: {source}", path.display())]
    Binding { path: PathBuf, source: BindError },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    theme: ThemeName,
    #[serde(default)]
    keys: Keys,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Keys {
    #[serde(default)]
    global: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    unikernels: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    details: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    console: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    blocks: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    form: BTreeMap<String, OneOrMany>,
}

/// `quit = "q"` or `quit = ["q", "ctrl-c"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Config {
    /// Where the config file is looked for.
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "fulmar")
            .map(|dirs| dirs.config_dir().join("config.toml"))
    }

    /// Reads `path`; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|source| ConfigError::Syntax {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let mut keys = KeyMap::default();
        let sections = [
            (Context::Global, file.keys.global),
            (Context::Unikernels, file.keys.unikernels),
            (Context::Details, file.keys.details),
            (Context::Console, file.keys.console),
            (Context::Blocks, file.keys.blocks),
            (Context::Form, file.keys.form),
        ];
        for (context, bindings) in sections {
            for (action, keys_text) in bindings {
                let list = match keys_text {
                    OneOrMany::One(k) => vec![k],
                    OneOrMany::Many(ks) => ks,
                };
                keys.rebind(context, &action, &list)
                    .map_err(|source| ConfigError::Binding {
                        path: path.to_owned(),
                        source,
                    })?;
            }
        }
        Ok(Config {
            theme: file.theme,
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::keymap::Action;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("config.toml"), text)
    }

    #[test]
    fn a_missing_file_means_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Config::load(&dir.path().join("none.toml")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn theme_and_keys_are_read() {
        let config = parse(
            "theme = \"colour-blind\"\n[keys.unikernels]\ndestroy = [\"D\", \"delete\"]\n[keys.global]\nquit = \"Q\"\n",
        )
        .unwrap();
        assert_eq!(config.theme, ThemeName::ColourBlind);
        let d = "D".parse().unwrap();
        assert_eq!(
            config.keys.action(Context::Unikernels, d),
            Some(Action::Destroy)
        );
        assert_eq!(
            config
                .keys
                .action(Context::Unikernels, "Q".parse().unwrap()),
            Some(Action::Quit)
        );
        assert_eq!(
            config
                .keys
                .action(Context::Unikernels, "q".parse().unwrap()),
            None
        );
    }

    #[test]
    fn the_forms_keys_are_rebound_in_their_own_section() {
        let config = parse("[keys.form]\nprevious-pane = \"f2\"\n").unwrap();
        let f2 = "f2".parse().unwrap();
        assert_eq!(
            config.keys.action(Context::Form, f2),
            Some(Action::PreviousPane)
        );
        let backtab = "backtab".parse().unwrap();
        assert_eq!(config.keys.action(Context::Form, backtab), None);
    }

    #[test]
    fn mistakes_are_refused_with_the_file_and_the_reason() {
        for (text, says) in [
            ("theme = \"neon\"", "neon"),
            ("colour = 1", "colour"),
            ("[keys.console]\nexplode = \"e\"", "no action `explode`"),
            (
                "[keys.console]\nfollow = \"hyper-f\"",
                "`hyper-f` is not a key",
            ),
            ("[keys.nowhere]\nquit = \"q\"", "nowhere"),
            ("theme = ", "config.toml"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(err.contains("config.toml"), "{text:?}: {err}");
        }
    }
}
