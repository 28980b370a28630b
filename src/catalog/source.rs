//! Model sources as users give them (`--model`, `model.source`).

use std::path::{Path, PathBuf};

use crate::hub::HubError;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory (Hugging Face layout, or baked).
    Dir(PathBuf),
    /// The random-weight demo model the tool makes itself.
    Demo,
    /// A Hub repository and revision ("main" unless given).
    Hub { repo: String, revision: String },
}

impl Source {
    /// A directory that exists wins; then "demo"; then `org/name[@rev]`;
    /// anything else is taken as a directory (missing: its own error later).
    /// Text shaped like an id whose parts break the Hub's rules (a revision
    /// with `..`, a name with `--`, ...) is an error, not a directory.
    pub fn parse(s: &str) -> Result<Source, HubError> {
        let p = Path::new(s);
        if s == "demo" && !p.exists() {
            return Ok(Source::Demo);
        }
        if p.exists() || s.starts_with('/') || s.starts_with('.') || s.starts_with('~') {
            return Ok(Source::Dir(p.to_path_buf()));
        }
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            Some(_) => return Ok(Source::Dir(p.to_path_buf())),
            None => (s, "main"),
        };
        let id_like = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !part.starts_with('.')
        };
        let Some((org, name)) = repo
            .split_once('/')
            .filter(|(o, n)| id_like(o) && id_like(n))
        else {
            return Ok(Source::Dir(p.to_path_buf()));
        };
        crate::hub::check_id(s, org, name, revision)?;
        Ok(Source::Hub {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        let parse = |s: &str| Source::parse(s).expect(s);
        assert_eq!(parse("demo"), Source::Demo);
        assert_eq!(
            parse("Qwen/Qwen2.5-0.5B-Instruct"),
            Source::Hub {
                repo: "Qwen/Qwen2.5-0.5B-Instruct".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            parse("meta-llama/Llama-3.2-1B@v1.0"),
            Source::Hub {
                repo: "meta-llama/Llama-3.2-1B".into(),
                revision: "v1.0".into()
            }
        );
        for dir in ["/models/x", "./a/b", "a/b/c", "nodir", "a/.b", "a/b@"] {
            assert!(matches!(parse(dir), Source::Dir(_)), "{dir}");
        }
        // An existing directory named like an id is a directory.
        let d = tempfile_dir();
        let id = d.display().to_string();
        assert_eq!(parse(&id), Source::Dir(d.clone()));
    }

    #[test]
    fn ids_that_break_the_hubs_rules_are_refused_with_the_rule() {
        for (id, rule) in [
            ("foo/bar@../../../../tmp/x", "'..'"),
            ("foo/bar@a/../../b", "'..'"),
            ("foo/bar@.hidden", "starting with '.'"),
            ("foo/bar@main.lock", "'.lock'"),
            ("foo/bar@we ird", "' '"),
            ("foo/bar@a:b", "':'"),
            ("foo/bar@x\\y", "'\\\\'"),
            ("foo/bar@a//b", "empty part"),
            ("foo/bar@v1.", "ends with '.'"),
            ("foo/bar@@{0}", "'@{'"),
            ("foo/bar@\u{7}", "'\\u{7}'"),
            ("foo--x/bar", "'--'"),
            ("foo/bar..baz", "'..'"),
            ("foo/bar-", "starts or ends"),
            ("-foo/bar", "starts or ends"),
            ("foo/bar.git", "'.git'"),
        ] {
            let err = Source::parse(id).expect_err(id).to_string();
            assert!(
                err.contains(rule) && err.contains("not a valid Hugging Face id"),
                "{id}: {err}"
            );
        }
        let long = format!("org/{}", "n".repeat(97));
        assert!(Source::parse(&long).is_err());
        let long_rev = format!("org/name@{}", "r".repeat(256));
        assert!(Source::parse(&long_rev).is_err());
        for ok in [
            "org/name@refs/pr/1",
            "org/name@v1.0",
            "org/name@0123456789abcdef0123456789abcdef01234567",
            "org/name@feature/x-y_z",
            "BAAI/bge-small-en-v1.5",
        ] {
            assert!(matches!(Source::parse(ok), Ok(Source::Hub { .. })), "{ok}");
        }
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("hybrid-hub-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    }
}
