//! The `[keys]` settings: the workbench's actions, their default keys, and
//! the notation keys are written in ("ctrl+r", "alt+enter", "f5", "?").
//! Checked here, with the other settings; the workbench turns the result
//! into terminal key events (`tui::keymap`).

use std::collections::BTreeMap;

/// Where a key is read: each screen has its own bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The chat (the workbench's main screen).
    Chat,
    /// The hardware check screen (F3, or `hybrid-tui check`).
    Check,
    /// The live bench screen.
    Bench,
}

/// Everything a key can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Send,
    Newline,
    Stop,
    Regenerate,
    Clear,
    CopyAnswer,
    Help,
    ScrollUp,
    ScrollDown,
    HistoryPrev,
    HistoryNext,
    EditSystem,
    ToggleLog,
    Hardware,
    /// Check and bench screens: close the screen (back to the chat, or
    /// quit when it is the only one; stop the bench).
    Back,
    /// Check screen: run the check again.
    Rerun,
    /// Check screen: select the previous / next check.
    SelectUp,
    SelectDown,
}

impl Action {
    pub const ALL: [Action; 19] = [
        Action::Send,
        Action::Newline,
        Action::Stop,
        Action::Regenerate,
        Action::Clear,
        Action::CopyAnswer,
        Action::EditSystem,
        Action::ScrollUp,
        Action::ScrollDown,
        Action::HistoryPrev,
        Action::HistoryNext,
        Action::ToggleLog,
        Action::Hardware,
        Action::Help,
        Action::Quit,
        Action::Back,
        Action::Rerun,
        Action::SelectUp,
        Action::SelectDown,
    ];

    /// The screens where the action's key is read.
    pub fn contexts(self) -> &'static [Context] {
        match self {
            Action::Quit => &[Context::Chat, Context::Check, Context::Bench],
            Action::Hardware | Action::ScrollUp | Action::ScrollDown => {
                &[Context::Chat, Context::Check]
            }
            Action::Back => &[Context::Check, Context::Bench],
            Action::Rerun | Action::SelectUp | Action::SelectDown => &[Context::Check],
            _ => &[Context::Chat],
        }
    }

    /// The settings key under `[keys]`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Send => "send",
            Action::Newline => "newline",
            Action::Stop => "stop",
            Action::Regenerate => "regenerate",
            Action::Clear => "clear",
            Action::CopyAnswer => "copy_answer",
            Action::Help => "help",
            Action::ScrollUp => "scroll_up",
            Action::ScrollDown => "scroll_down",
            Action::HistoryPrev => "history_prev",
            Action::HistoryNext => "history_next",
            Action::EditSystem => "edit_system",
            Action::ToggleLog => "toggle_log",
            Action::Hardware => "hardware",
            Action::Back => "back",
            Action::Rerun => "rerun",
            Action::SelectUp => "select_up",
            Action::SelectDown => "select_down",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Send => "send the message",
            Action::Newline => "new line in the message",
            Action::Stop => "stop generating (or close help)",
            Action::Regenerate => "regenerate the last answer",
            Action::Clear => "clear the conversation",
            Action::CopyAnswer => "save the last answer to a file",
            Action::Help => "this help",
            Action::ScrollUp => "scroll the conversation up",
            Action::ScrollDown => "scroll the conversation down",
            Action::HistoryPrev => "previous message from history",
            Action::HistoryNext => "next message from history",
            Action::EditSystem => "edit the system prompt (Enter saves)",
            Action::ToggleLog => "show / hide the log",
            Action::Hardware => "hardware check and live device use (Esc returns)",
            Action::Back => "check screen: back to the chat; bench screen: stop the bench (q too)",
            Action::Rerun => "check screen: check again",
            Action::SelectUp => "check screen: previous check",
            Action::SelectDown => "check screen: next check",
        }
    }

    /// Default binding, in the settings' notation.
    pub fn default_key(self) -> &'static str {
        match self {
            Action::Quit => "ctrl+q",
            Action::Send => "enter",
            Action::Newline => "alt+enter",
            Action::Stop => "esc",
            Action::Regenerate => "ctrl+r",
            Action::Clear => "ctrl+l",
            Action::CopyAnswer => "ctrl+y",
            Action::Help => "f1",
            Action::ScrollUp => "pageup",
            Action::ScrollDown => "pagedown",
            Action::HistoryPrev => "up",
            Action::HistoryNext => "down",
            Action::EditSystem => "ctrl+s",
            Action::ToggleLog => "f2",
            Action::Hardware => "f3",
            Action::Back => "esc",
            Action::Rerun => "r",
            Action::SelectUp => "up",
            Action::SelectDown => "down",
        }
    }
}

/// A key the notation cannot read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotationError {
    #[error("empty key '{0}'")]
    Empty(String),
    #[error("'{modifier}' in '{key}' is not ctrl, alt or shift")]
    Modifier { modifier: String, key: String },
    #[error("'{name}' in '{key}' is not a key name")]
    Name { name: String, key: String },
}

/// A `[keys]` setting that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    #[error("keys.{action}: no such action; actions are {actions}")]
    UnknownAction { action: String, actions: String },
    #[error("keys.{action}: {source}")]
    BadKey {
        action: String,
        source: NotationError,
    },
}

impl KeyError {
    /// The setting at fault (`keys.<action>`).
    pub fn key(&self) -> String {
        match self {
            KeyError::UnknownAction { action, .. } | KeyError::BadKey { action, .. } => {
                format!("keys.{action}")
            }
        }
    }
}

/// A key name of the notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyName {
    Char(char),
    Enter,
    Esc,
    Tab,
    Backspace,
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Home,
    End,
    F(u8),
}

/// A key with modifiers, as written in settings: "ctrl+r", "alt+enter", "f1", "?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub name: KeyName,
    pub ctrl: bool,
    pub alt: bool,
    pub shift: bool,
}

impl KeySpec {
    pub fn parse(s: &str) -> Result<KeySpec, NotationError> {
        let lower = s.trim().to_ascii_lowercase();
        let mut parts: Vec<&str> = lower.split('+').collect();
        // "ctrl++" means ctrl and the plus key.
        if lower.ends_with("++") {
            parts.pop();
            parts.pop();
            parts.push("+");
        }
        let Some(last) = parts.pop() else {
            return Err(NotationError::Empty(s.to_string()));
        };
        let (mut ctrl, mut alt, mut shift) = (false, false, false);
        for m in parts {
            match m {
                "ctrl" | "control" => ctrl = true,
                "alt" | "meta" => alt = true,
                "shift" => shift = true,
                other => {
                    return Err(NotationError::Modifier {
                        modifier: other.to_string(),
                        key: s.to_string(),
                    });
                }
            }
        }
        let name = match last {
            "enter" | "return" => KeyName::Enter,
            "esc" | "escape" => KeyName::Esc,
            "tab" => KeyName::Tab,
            "backspace" => KeyName::Backspace,
            "up" => KeyName::Up,
            "down" => KeyName::Down,
            "left" => KeyName::Left,
            "right" => KeyName::Right,
            "pageup" => KeyName::PageUp,
            "pagedown" => KeyName::PageDown,
            "home" => KeyName::Home,
            "end" => KeyName::End,
            "space" => KeyName::Char(' '),
            f if f.len() > 1 && f.starts_with('f') && f[1..].parse::<u8>().is_ok() => {
                KeyName::F(f[1..].parse().unwrap_or(1))
            }
            c if c.chars().count() == 1 => KeyName::Char(c.chars().next().unwrap_or(' ')),
            other => {
                return Err(NotationError::Name {
                    name: other.to_string(),
                    key: s.to_string(),
                });
            }
        };
        Ok(KeySpec {
            name,
            ctrl,
            alt,
            shift,
        })
    }
}

/// Every action with its key: the default, or the override (action name →
/// key). An unknown action or a key that does not parse is an error naming
/// `keys.<action>`.
pub fn bindings(overrides: &BTreeMap<String, String>) -> Result<Vec<(KeySpec, Action)>, KeyError> {
    for name in overrides.keys() {
        if !Action::ALL.iter().any(|a| a.name() == name) {
            let names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
            return Err(KeyError::UnknownAction {
                action: name.clone(),
                actions: names.join(", "),
            });
        }
    }
    Action::ALL
        .iter()
        .map(|&a| {
            let spec = overrides
                .get(a.name())
                .map(String::as_str)
                .unwrap_or(a.default_key());
            KeySpec::parse(spec)
                .map(|k| (k, a))
                .map_err(|source| KeyError::BadKey {
                    action: a.name().to_string(),
                    source,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_notation_parses() {
        let k = KeySpec::parse("Ctrl+R").unwrap();
        assert_eq!(k.name, KeyName::Char('r'));
        assert!(k.ctrl && !k.alt);
        assert_eq!(KeySpec::parse("f5").unwrap().name, KeyName::F(5));
        assert_eq!(KeySpec::parse("ctrl++").unwrap().name, KeyName::Char('+'));
        assert!(KeySpec::parse("hyper+x").is_err());
        let mut o = BTreeMap::new();
        o.insert("regenerate".to_string(), "f5".to_string());
        let b = bindings(&o).unwrap();
        assert!(b.contains(&(KeySpec::parse("f5").unwrap(), Action::Regenerate)));
        o.insert("fly".to_string(), "f6".to_string());
        assert!(bindings(&o).unwrap_err().to_string().contains("keys.fly"));
    }
}
