//! The arguments field: one line split into words as a shell would, with no
//! shell behind it. Only quotes and backslashes mean anything: no variables,
//! no globs, no command substitution, so what the operator sees is what the
//! unikernel gets.

/// Why a line of arguments cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("a {0} quote is not closed: close it, or put a \\ before it")]
    Unclosed(&'static str),
    #[error("the line ends in a lone \\: write \\\\ for a backslash, or remove it")]
    TrailingBackslash,
}

/// Splits `line` into words: blanks separate them; `'...'` is taken as it
/// is; in `"..."` a backslash escapes only `"` and `\`; elsewhere a
/// backslash takes the next character as it is. `''` is an empty word.
pub fn split(line: &str) -> Result<Vec<String>, ArgsError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word has started, even if it is still empty (after `''`).
    let mut started = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            '\'' => {
                started = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(ArgsError::Unclosed("single")),
                    }
                }
            }
            '"' => {
                started = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(ArgsError::Unclosed("double")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(ArgsError::Unclosed("double")),
                    }
                }
            }
            '\\' => {
                started = true;
                word.push(chars.next().ok_or(ArgsError::TrailingBackslash)?);
            }
            c => {
                started = true;
                word.push(c);
            }
        }
    }
    if started {
        words.push(word);
    }
    Ok(words)
}

/// Writes `args` as one line that [`split`] turns back into them: plain
/// words as they are, the rest in single quotes.
pub fn join(args: &[String]) -> String {
    args.iter()
        .map(|arg| quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        return arg.to_string();
    }
    // A single quote cannot appear inside single quotes: close, escape, reopen.
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn blanks_separate_words() {
        assert_eq!(
            words("  --ipv4=10.0.0.2/24   -l  debug "),
            ["--ipv4=10.0.0.2/24", "-l", "debug"]
        );
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("   "), Vec::<String>::new());
    }

    #[test]
    fn quotes_and_backslashes_as_a_shell_reads_them() {
        assert_eq!(
            words(r#"print='hello world' x"#),
            ["print=hello world", "x"]
        );
        assert_eq!(words(r#""a \"b\" \\ \n""#), [r#"a "b" \ \n"#]);
        assert_eq!(words(r"a\ b \'c"), ["a b", "'c"]);
        assert_eq!(words(r#"'it'\''s' "" ''"#), ["it's", "", ""]);
        assert_eq!(words(r#"'$HOME' *.txt `id`"#), ["$HOME", "*.txt", "`id`"]);
        assert_eq!(words(r#"a"b"'c'd"#), ["abcd"]);
    }

    #[test]
    fn unfinished_lines_are_refused_with_the_reason() {
        assert_eq!(split("'open"), Err(ArgsError::Unclosed("single")));
        assert_eq!(split(r#"say "hi"#), Err(ArgsError::Unclosed("double")));
        assert_eq!(split(r#""ends in \"#), Err(ArgsError::Unclosed("double")));
        assert_eq!(split(r"trailing\"), Err(ArgsError::TrailingBackslash));
        assert!(
            split("'x")
                .unwrap_err()
                .to_string()
                .contains("single quote is not closed")
        );
    }

    #[test]
    fn join_is_undone_by_split() {
        for args in [
            vec![],
            vec!["--ipv4=10.0.0.2/24", "-l", "*:debug"],
            vec![
                "hello world",
                "",
                "it's",
                r#"a "b" \ c"#,
                "$HOME",
                "tab\there",
            ],
        ] {
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            let line = join(&args);
            assert_eq!(split(&line).unwrap(), args, "{line}");
        }
        assert_eq!(join(&["a".into(), "b c".into()]), "a 'b c'");
    }
}
