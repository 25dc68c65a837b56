//! Colours. Every screen takes its styles from a [`Theme`], never from
//! literal colours, so the three themes cover everything. Colour is never the
//! only signal: states are always written out as text too.

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// The themes an operator can pick in the config file or with `--theme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ThemeName {
    #[default]
    Default,
    Light,
    /// No red/green pair carries meaning: blue for good, orange for trouble.
    ColourBlind,
}

/// The styles of one theme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub text: Style,
    pub dim: Style,
    pub title: Style,
    pub border: Style,
    pub header: Style,
    pub selected: Style,
    pub key: Style,
    /// A state that is fine (running).
    pub good: Style,
    /// A state on its way somewhere (restarting).
    pub busy: Style,
    /// A state that needs the operator (crash loop, killed by a signal).
    pub bad: Style,
    /// A match of `/` find in a console.
    pub matched: Style,
    /// Lines fulmar wrote into a console ("--- exited 2 ---").
    pub fulmar: Style,
    /// The "disconnected — retrying" banner and error notices.
    pub alert: Style,
    /// The filled part of a gauge or bar.
    pub bar: Style,
    pub button: Style,
    pub button_focused: Style,
}

impl Theme {
    pub fn new(name: ThemeName) -> Theme {
        match name {
            ThemeName::Default => Theme::dark(),
            ThemeName::Light => Theme::light(),
            ThemeName::ColourBlind => Theme::colour_blind(),
        }
    }

    fn dark() -> Theme {
        Theme {
            text: Style::new().fg(Color::Gray),
            dim: Style::new().fg(Color::DarkGray),
            title: Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            border: Style::new().fg(Color::DarkGray),
            header: Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            selected: Style::new().fg(Color::Black).bg(Color::Cyan),
            key: Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
            good: Style::new().fg(Color::Green),
            busy: Style::new().fg(Color::Yellow),
            bad: Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            matched: Style::new().fg(Color::Black).bg(Color::Yellow),
            fulmar: Style::new().fg(Color::Cyan).add_modifier(Modifier::ITALIC),
            alert: Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
            bar: Style::new().fg(Color::Cyan),
            button: Style::new().fg(Color::Gray),
            button_focused: Style::new()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD),
        }
    }

    fn light() -> Theme {
        Theme {
            text: Style::new().fg(Color::Black),
            dim: Style::new().fg(Color::DarkGray),
            title: Style::new().fg(Color::Blue).add_modifier(Modifier::BOLD),
            border: Style::new().fg(Color::Gray),
            header: Style::new().fg(Color::Blue).add_modifier(Modifier::BOLD),
            selected: Style::new().fg(Color::White).bg(Color::Blue),
            key: Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
            good: Style::new().fg(Color::Green),
            busy: Style::new().fg(Color::Rgb(160, 100, 0)),
            bad: Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            matched: Style::new().fg(Color::Black).bg(Color::LightYellow),
            fulmar: Style::new().fg(Color::Blue).add_modifier(Modifier::ITALIC),
            alert: Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
            bar: Style::new().fg(Color::Blue),
            button: Style::new().fg(Color::Black),
            button_focused: Style::new()
                .fg(Color::White)
                .bg(Color::Blue)
                .add_modifier(Modifier::BOLD),
        }
    }

    /// Okabe–Ito colours: blue and orange stay apart for every kind of
    /// colour blindness, and trouble is also bold.
    fn colour_blind() -> Theme {
        let blue = Color::Rgb(0, 114, 178);
        let orange = Color::Rgb(230, 159, 0);
        let vermilion = Color::Rgb(213, 94, 0);
        Theme {
            good: Style::new().fg(blue),
            busy: Style::new().fg(orange),
            bad: Style::new()
                .fg(vermilion)
                .add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            bar: Style::new().fg(blue),
            alert: Style::new()
                .fg(Color::Black)
                .bg(orange)
                .add_modifier(Modifier::BOLD),
            ..Theme::dark()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_blind_theme_never_tells_states_apart_by_red_and_green() {
        let theme = Theme::new(ThemeName::ColourBlind);
        for style in [theme.good, theme.busy, theme.bad, theme.alert, theme.bar] {
            for colour in [style.fg, style.bg].into_iter().flatten() {
                assert!(
                    !matches!(
                        colour,
                        Color::Red | Color::Green | Color::LightRed | Color::LightGreen
                    ),
                    "{style:?}"
                );
            }
        }
    }

    #[test]
    fn themes_differ() {
        let [d, l, c] =
            [ThemeName::Default, ThemeName::Light, ThemeName::ColourBlind].map(Theme::new);
        assert_ne!(d, l);
        assert_ne!(d, c);
    }
}
