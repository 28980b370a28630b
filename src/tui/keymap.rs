//! Keys → actions, as a table (overridable in settings: `[keys]`).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

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
}

impl Action {
    pub const ALL: [Action; 15] = [
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
    ];

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
        }
    }
}

/// A key with modifiers, as written in settings: "ctrl+r", "alt+enter", "f1", "?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

impl Key {
    pub fn parse(s: &str) -> Result<Key, String> {
        let mut mods = KeyModifiers::NONE;
        let lower = s.trim().to_ascii_lowercase();
        let mut parts: Vec<&str> = lower.split('+').collect();
        // "ctrl++" means ctrl and the plus key.
        if lower.ends_with("++") {
            parts.pop();
            parts.pop();
            parts.push("+");
        }
        let Some(last) = parts.pop() else {
            return Err(format!("empty key '{s}'"));
        };
        for m in parts {
            mods |= match m {
                "ctrl" | "control" => KeyModifiers::CONTROL,
                "alt" | "meta" => KeyModifiers::ALT,
                "shift" => KeyModifiers::SHIFT,
                other => return Err(format!("'{other}' in '{s}' is not ctrl, alt or shift")),
            };
        }
        let code = match last {
            "enter" | "return" => KeyCode::Enter,
            "esc" | "escape" => KeyCode::Esc,
            "tab" => KeyCode::Tab,
            "backspace" => KeyCode::Backspace,
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "pageup" => KeyCode::PageUp,
            "pagedown" => KeyCode::PageDown,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            "space" => KeyCode::Char(' '),
            f if f.len() > 1 && f.starts_with('f') && f[1..].parse::<u8>().is_ok() => {
                KeyCode::F(f[1..].parse().unwrap_or(1))
            }
            c if c.chars().count() == 1 => KeyCode::Char(c.chars().next().unwrap_or(' ')),
            other => return Err(format!("'{other}' in '{s}' is not a key name")),
        };
        Ok(Key { code, mods })
    }

    pub fn matches(&self, ev: &KeyEvent) -> bool {
        let code = match ev.code {
            KeyCode::Char(c) => KeyCode::Char(c.to_ascii_lowercase()),
            c => c,
        };
        // Shift is implied by the character itself ("?"), so only ctrl/alt must agree.
        let relevant = KeyModifiers::CONTROL | KeyModifiers::ALT;
        code == self.code && (ev.modifiers & relevant) == (self.mods & relevant)
    }

    pub fn label(&self) -> String {
        let mut s = String::new();
        if self.mods.contains(KeyModifiers::CONTROL) {
            s.push_str("Ctrl-");
        }
        if self.mods.contains(KeyModifiers::ALT) {
            s.push_str("Alt-");
        }
        match self.code {
            KeyCode::Char(' ') => s.push_str("Space"),
            KeyCode::Char(c) => s.push(c.to_ascii_uppercase()),
            KeyCode::F(n) => s.push_str(&format!("F{n}")),
            KeyCode::PageUp => s.push_str("PgUp"),
            KeyCode::PageDown => s.push_str("PgDn"),
            other => s.push_str(&format!("{other:?}")),
        }
        s
    }
}

/// The table: each action with its keys (the default plus `?` for help
/// and Ctrl-C for quit, which always work).
#[derive(Debug, Clone)]
pub struct Keymap {
    pub bindings: Vec<(Key, Action)>,
}

impl Keymap {
    /// Defaults overridden by `overrides` (action name → key).
    pub fn new(overrides: &std::collections::BTreeMap<String, String>) -> Result<Keymap, String> {
        for name in overrides.keys() {
            if !Action::ALL.iter().any(|a| a.name() == name) {
                let names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
                return Err(format!(
                    "keys.{name}: no such action; actions are {}",
                    names.join(", ")
                ));
            }
        }
        let mut bindings = Vec::new();
        for a in Action::ALL {
            let spec = overrides
                .get(a.name())
                .map(String::as_str)
                .unwrap_or(a.default_key());
            let key = Key::parse(spec).map_err(|e| format!("keys.{}: {e}", a.name()))?;
            bindings.push((key, a));
        }
        bindings.push((
            Key {
                code: KeyCode::Char('c'),
                mods: KeyModifiers::CONTROL,
            },
            Action::Quit,
        ));
        Ok(Keymap { bindings })
    }

    pub fn action(&self, ev: &KeyEvent) -> Option<Action> {
        self.bindings
            .iter()
            .find(|(k, _)| k.matches(ev))
            .map(|(_, a)| *a)
    }

    /// The first key bound to `a`, for help and hints.
    pub fn key_for(&self, a: Action) -> String {
        self.bindings
            .iter()
            .find(|(_, b)| *b == a)
            .map(|(k, _)| k.label())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_match() {
        let k = Key::parse("Ctrl+R").unwrap();
        assert!(k.matches(&KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL)));
        assert!(!k.matches(&KeyEvent::new(KeyCode::Char('r'), KeyModifiers::NONE)));
        assert_eq!(Key::parse("f5").unwrap().code, KeyCode::F(5));
        assert_eq!(Key::parse("ctrl++").unwrap().code, KeyCode::Char('+'));
        assert!(Key::parse("hyper+x").is_err());
        let mut o = std::collections::BTreeMap::new();
        o.insert("regenerate".to_string(), "f5".to_string());
        let m = Keymap::new(&o).unwrap();
        assert_eq!(
            m.action(&KeyEvent::new(KeyCode::F(5), KeyModifiers::NONE)),
            Some(Action::Regenerate)
        );
        o.insert("fly".to_string(), "f6".to_string());
        assert!(Keymap::new(&o).unwrap_err().contains("keys.fly"));
    }
}
