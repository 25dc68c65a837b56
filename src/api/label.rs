//! Names of unikernels and block devices, by albatross's label rules, so a host
//! can move from albatross without renaming anything.

use serde::{Deserialize, Serialize};
use std::fmt;

pub const MAX_LEN: usize = 63;

/// A validated name: 1 to 63 characters of `[a-zA-Z0-9-.]`, not starting with `-`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("the name is empty: give 1 to {MAX_LEN} characters of letters, digits, '-' and '.'")]
    Empty,
    #[error("the name is {0} characters long: shorten it to at most {MAX_LEN}")]
    TooLong(usize),
    #[error("the name starts with '-': start it with a letter, digit or '.'")]
    LeadingDash,
    #[error("the name contains {0:?} at position {1}: use only letters, digits, '-' and '.'")]
    BadChar(char, usize),
    #[error("{0:?} names a directory, not a thing: pick another name")]
    Dots(String),
}

impl Label {
    pub fn new(name: &str) -> Result<Label, LabelError> {
        let len = name.chars().count();
        if len == 0 {
            return Err(LabelError::Empty);
        }
        if len > MAX_LEN {
            return Err(LabelError::TooLong(len));
        }
        if name.starts_with('-') {
            return Err(LabelError::LeadingDash);
        }
        // Names become file names; these two would name directories.
        if name == "." || name == ".." {
            return Err(LabelError::Dots(name.to_owned()));
        }
        if let Some((i, c)) = name
            .chars()
            .enumerate()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return Err(LabelError::BadChar(c, i + 1));
        }
        Ok(Label(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Label {
    type Error = LabelError;
    fn try_from(s: String) -> Result<Label, LabelError> {
        Label::new(&s)
    }
}

impl From<Label> for String {
    fn from(l: Label) -> String {
        l.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Label {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Label, LabelError> {
        Label::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_albatross_labels() {
        for ok in [
            "a",
            "hello",
            "web-1.example",
            ".hidden",
            "A9",
            &"x".repeat(63),
        ] {
            assert_eq!(Label::new(ok).map(|l| l.to_string()), Ok(ok.to_string()));
        }
    }

    #[test]
    fn refuses_each_rule_with_its_reason() {
        assert_eq!(Label::new(""), Err(LabelError::Empty));
        assert_eq!(Label::new(&"x".repeat(64)), Err(LabelError::TooLong(64)));
        assert_eq!(Label::new("-web"), Err(LabelError::LeadingDash));
        assert_eq!(Label::new("we b"), Err(LabelError::BadChar(' ', 3)));
        assert_eq!(Label::new("a/b"), Err(LabelError::BadChar('/', 2)));
        assert_eq!(Label::new("..\0"), Err(LabelError::BadChar('\0', 3)));
        assert_eq!(Label::new(".."), Err(LabelError::Dots("..".into())));
        assert_eq!(Label::new("."), Err(LabelError::Dots(".".into())));
        assert_eq!(
            Label::new("caf\u{e9}"),
            Err(LabelError::BadChar('\u{e9}', 4))
        );
    }

    #[test]
    fn deserializing_checks_the_rules() {
        assert!(serde_json::from_str::<Label>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<Label>("\"-no\"").is_err());
    }
}
