//! Indexes of files for retrieval: `hybrid-tui index` and `search`.
//!
//! One SQLite database per index name under
//! `$XDG_DATA_HOME/hybrid-tui/index/<name>.sqlite` (WAL journal): the
//! index's settings (`meta`), one row per file (path, size, mtime, sha256
//! of the content, chunks) and one per chunk (file, line range, text,
//! vector as little-endian f32). Each file is replaced in one transaction,
//! so a run killed mid-way leaves every file either as it was or as it is
//! now; the next run finds the rest by their hashes.
//!
//! A pass ([`Index::update`], `index/pass.rs`) walks the roots with the `ignore` crate
//! (`.gitignore`, `.ignore` and hidden files respected, in a repository or
//! not), skips files larger than `embed.max_file_kib` and binaries (a NUL
//! byte in the first 8 KiB, or not UTF-8), and skips a file whose size and
//! mtime, or else whose content hash, is unchanged. A changed file is cut
//! into chunks ([`crate::embed::chunk`]), embedded in batches, and stored.
//! Files of the index no longer found under its roots are dropped.
//!
//! [`Index::search`] is brute force: the query's vector against every
//! chunk's (unit vectors: the dot product is the cosine), the k best kept.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::EmbedError;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(
        "index name '{0}': use letters, digits, '.', '_' and '-' only (it names a file under the index directory)"
    )]
    BadName(String),
    #[error("no index named '{name}' in {dir}; make it with `hybrid-tui index PATH --name {name}`")]
    NotFound { name: String, dir: PathBuf },
    #[error("no data directory for indexes (HOME and XDG_DATA_HOME are unset); set XDG_DATA_HOME")]
    NoDataDir,
    #[error(
        "index '{name}' was built with {built} ({built_dim} dimensions); embed.model is now {now} ({now_dim}). Rebuild it with `hybrid-tui index PATH... --name {name} --rebuild`, or set embed.model back"
    )]
    ModelChanged {
        name: String,
        built: String,
        built_dim: usize,
        now: String,
        now_dim: usize,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no such file or directory to index")]
    MissingRoot(PathBuf),
    #[error("{0}")]
    Chunking(String),
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub path: String,
    pub start_line: usize,
    pub end_line: usize,
    pub score: f32,
    pub text: String,
}

/// The directory indexes live in.
pub fn index_dir() -> Result<PathBuf, IndexError> {
    crate::paths::data_dir()
        .map(|d| d.join("index"))
        .ok_or(IndexError::NoDataDir)
}

/// The names of the existing indexes.
pub fn list() -> Result<Vec<String>, IndexError> {
    let dir = index_dir()?;
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".sqlite"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

fn check_name(name: &str) -> Result<(), IndexError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(IndexError::BadName(name.to_string()))
    }
}

/// The default name of an index of `root`: its folder's name.
pub fn default_name(root: &Path) -> String {
    let abs = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let raw = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into());
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    clean.trim_start_matches('.').to_string()
}

/// An open index.
mod pass;

pub use pass::{IndexEvent, IndexReport};

/// An open index.
pub struct Index {
    pub name: String,
    pub path: PathBuf,
    db: Connection,
}

fn vec_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Index {
    /// Open index `name`; `create` makes it when missing.
    pub fn open(name: &str, create: bool) -> Result<Index, IndexError> {
        check_name(name)?;
        let dir = index_dir()?;
        let path = dir.join(format!("{name}.sqlite"));
        if !path.exists() {
            if !create {
                return Err(IndexError::NotFound {
                    name: name.into(),
                    dir,
                });
            }
            std::fs::create_dir_all(&dir).map_err(|source| IndexError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        Index::open_at(name, &path)
    }

    /// Open (or create) the index database at `path`.
    pub fn open_at(name: &str, path: &Path) -> Result<Index, IndexError> {
        let sql = |source| IndexError::Sql {
            path: path.to_path_buf(),
            source,
        };
        let db = Connection::open(path).map_err(sql)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS files (
                 id INTEGER PRIMARY KEY,
                 path TEXT NOT NULL UNIQUE,
                 size INTEGER NOT NULL,
                 mtime_ns INTEGER NOT NULL,
                 sha256 TEXT NOT NULL,
                 chunks INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS chunks (
                 id INTEGER PRIMARY KEY,
                 file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
                 start_line INTEGER NOT NULL,
                 end_line INTEGER NOT NULL,
                 text TEXT NOT NULL,
                 vector BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks(file_id);",
        )
        .map_err(sql)?;
        Ok(Index {
            name: name.to_string(),
            path: path.to_path_buf(),
            db,
        })
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> IndexError + '_ {
        move |source| IndexError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    fn meta(&self, key: &str) -> Result<Option<String>, IndexError> {
        self.db
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.sql())
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), IndexError> {
        self.db
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(self.sql())
    }

    /// The embedding model the index was built with, and its dimensions.
    pub fn model(&self) -> Result<Option<(String, usize)>, IndexError> {
        let model = self.meta("model")?;
        let dim = self.meta("dim")?.and_then(|d| d.parse().ok());
        Ok(model.zip(dim))
    }

    /// The index holds vectors of `model` (`dim` long), or none yet.
    pub fn check_model(&self, model: &str, dim: usize) -> Result<(), IndexError> {
        match self.model()? {
            Some((m, d)) if m != model || d != dim => Err(IndexError::ModelChanged {
                name: self.name.clone(),
                built: m,
                built_dim: d,
                now: model.to_string(),
                now_dim: dim,
            }),
            _ => Ok(()),
        }
    }

    /// Refuse to mix vectors of another model; an empty index takes this
    /// one, and `rebuild` empties the index for it.
    pub fn bind_model(&self, model: &str, dim: usize, rebuild: bool) -> Result<(), IndexError> {
        if !rebuild {
            self.check_model(model, dim)?;
        }
        match self.model()? {
            Some(_) if !rebuild => Ok(()),
            _ => {
                self.db
                    .execute_batch("DELETE FROM chunks; DELETE FROM files;")
                    .map_err(self.sql())?;
                self.set_meta("model", model)?;
                self.set_meta("dim", &dim.to_string())
            }
        }
    }

    /// Files and chunks in the index.
    pub fn counts(&self) -> Result<(usize, usize), IndexError> {
        let files: i64 = self
            .db
            .query_row("SELECT COUNT(*) FROM files", [], |r| r.get(0))
            .map_err(self.sql())?;
        let chunks: i64 = self
            .db
            .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get(0))
            .map_err(self.sql())?;
        Ok((files as usize, chunks as usize))
    }

    /// The `k` chunks nearest `query` (a unit vector), best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>, IndexError> {
        let mut st = self
            .db
            .prepare("SELECT chunks.id, chunks.vector FROM chunks")
            .map_err(self.sql())?;
        let mut scored: Vec<(f32, i64)> = st
            .query_map([], |r| {
                let id: i64 = r.get(0)?;
                let blob: Vec<u8> = r.get(1)?;
                let score = blob
                    .chunks_exact(4)
                    .zip(query)
                    .map(|(b, q)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * q)
                    .sum::<f32>();
                Ok((score, id))
            })
            .map_err(self.sql())?
            .collect::<Result<_, _>>()
            .map_err(self.sql())?;
        let k = k.min(scored.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        scored.truncate(k);
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut get = self
            .db
            .prepare(
                "SELECT files.path, chunks.start_line, chunks.end_line, chunks.text
                 FROM chunks JOIN files ON files.id = chunks.file_id WHERE chunks.id = ?1",
            )
            .map_err(self.sql())?;
        scored
            .into_iter()
            .map(|(score, id)| {
                get.query_row([id], |r| {
                    Ok(Hit {
                        path: r.get(0)?,
                        start_line: r.get::<_, i64>(1)? as usize,
                        end_line: r.get::<_, i64>(2)? as usize,
                        score,
                        text: r.get(3)?,
                    })
                })
                .map_err(self.sql())
            })
            .collect()
    }

    /// SQLite's own check of the database ("ok" when sound).
    pub fn integrity(&self) -> Result<String, IndexError> {
        self.db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(self.sql())
    }
}
