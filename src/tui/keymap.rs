//! Keys → actions, as a table (overridable in settings: `[keys]`, whose
//! notation and actions `config::keys` defines and checks).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::config::keys::{self, KeyError, KeyName, KeySpec, NotationError};
pub use crate::config::keys::{Action, Context};

/// A key with modifiers as the terminal reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

impl From<KeySpec> for Key {
    fn from(k: KeySpec) -> Key {
        let code = match k.name {
            KeyName::Char(c) => KeyCode::Char(c),
            KeyName::Enter => KeyCode::Enter,
            KeyName::Esc => KeyCode::Esc,
            KeyName::Tab => KeyCode::Tab,
            KeyName::Backspace => KeyCode::Backspace,
            KeyName::Up => KeyCode::Up,
            KeyName::Down => KeyCode::Down,
            KeyName::Left => KeyCode::Left,
            KeyName::Right => KeyCode::Right,
            KeyName::PageUp => KeyCode::PageUp,
            KeyName::PageDown => KeyCode::PageDown,
            KeyName::Home => KeyCode::Home,
            KeyName::End => KeyCode::End,
            KeyName::F(n) => KeyCode::F(n),
        };
        let mut mods = KeyModifiers::NONE;
        if k.ctrl {
            mods |= KeyModifiers::CONTROL;
        }
        if k.alt {
            mods |= KeyModifiers::ALT;
        }
        if k.shift {
            mods |= KeyModifiers::SHIFT;
        }
        Key { code, mods }
    }
}

impl Key {
    pub fn parse(s: &str) -> Result<Key, NotationError> {
        KeySpec::parse(s).map(Key::from)
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
            // Ctrl-R as menus write it; a plain key as it is typed.
            KeyCode::Char(c) if !s.is_empty() => s.push(c.to_ascii_uppercase()),
            KeyCode::Char(c) => s.push(c),
            KeyCode::Up => s.push('↑'),
            KeyCode::Down => s.push('↓'),
            KeyCode::Left => s.push('←'),
            KeyCode::Right => s.push('→'),
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
    /// Defaults overridden by `overrides` (action name → key), checked by
    /// the settings ([`keys::bindings`]).
    pub fn new(overrides: &std::collections::BTreeMap<String, String>) -> Result<Keymap, KeyError> {
        let mut bindings: Vec<(Key, Action)> = keys::bindings(overrides)?
            .into_iter()
            .map(|(k, a)| (Key::from(k), a))
            .collect();
        // Always there: Ctrl-C quits, and q closes the check and bench screens.
        bindings.push((
            Key {
                code: KeyCode::Char('c'),
                mods: KeyModifiers::CONTROL,
            },
            Action::Quit,
        ));
        bindings.push((
            Key {
                code: KeyCode::Char('q'),
                mods: KeyModifiers::NONE,
            },
            Action::Back,
        ));
        Ok(Keymap { bindings })
    }

    /// The action of `ev` on the screen `ctx`.
    pub fn action(&self, ctx: Context, ev: &KeyEvent) -> Option<Action> {
        self.bindings
            .iter()
            .find(|(k, a)| a.contexts().contains(&ctx) && k.matches(ev))
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
            m.action(
                Context::Chat,
                &KeyEvent::new(KeyCode::F(5), KeyModifiers::NONE)
            ),
            Some(Action::Regenerate)
        );
        // Each screen reads its own keys: r re-runs the check only on the
        // check screen; q types in the chat and closes the other screens.
        let r = KeyEvent::new(KeyCode::Char('r'), KeyModifiers::NONE);
        let q = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        assert_eq!(m.action(Context::Check, &r), Some(Action::Rerun));
        assert_eq!(m.action(Context::Chat, &r), None);
        assert_eq!(m.action(Context::Chat, &q), None);
        assert_eq!(m.action(Context::Check, &q), Some(Action::Back));
        assert_eq!(m.action(Context::Bench, &q), Some(Action::Back));
        let mut o2 = std::collections::BTreeMap::new();
        o2.insert("rerun".to_string(), "f9".to_string());
        let m2 = Keymap::new(&o2).unwrap();
        let f9 = KeyEvent::new(KeyCode::F(9), KeyModifiers::NONE);
        assert_eq!(m2.action(Context::Check, &f9), Some(Action::Rerun));
        assert_eq!(m2.action(Context::Check, &r), None);
        assert_eq!(m2.key_for(Action::Rerun), "F9");
        o.insert("fly".to_string(), "f6".to_string());
        assert!(
            Keymap::new(&o)
                .unwrap_err()
                .to_string()
                .contains("keys.fly")
        );
    }
}
