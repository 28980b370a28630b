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
//! A pass ([`Index::update`]) walks the roots with the `ignore` crate
//! (`.gitignore`, `.ignore` and hidden files respected, in a repository or
//! not), skips files larger than `embed.max_file_kib` and binaries (a NUL
//! byte in the first 8 KiB, or not UTF-8), and skips a file whose size and
//! mtime, or else whose content hash, is unchanged. A changed file is cut
//! into chunks of `embed.chunk_tokens` of the embedding model's tokens with
//! `embed.chunk_overlap` shared (`text-splitter`, at semantic boundaries:
//! paragraphs, lines, sentences, words), embedded in batches, and stored.
//! Files of the index no longer found under its roots are dropped.
//!
//! [`Index::search`] is brute force: the query's vector against every
//! chunk's (unit vectors: the dot product is the cosine), the k best kept.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use text_splitter::{ChunkConfig, ChunkSizer, TextSplitter};

use super::{EmbedError, Embedder, TextKind};
use crate::model::bert_tokens::BertTokenizer;

/// Bytes looked at for a NUL (a binary file).
const SNIFF_BYTES: usize = 8192;
/// Chunks embedded per call (several files' chunks go together).
const EMBED_GROUP: usize = 64;

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

/// How files become chunks.
#[derive(Debug, Clone, Copy)]
pub struct ChunkOptions {
    pub tokens: usize,
    pub overlap: usize,
    pub max_file_bytes: u64,
}

/// What a pass is doing, for a progress display.
#[derive(Debug, Clone)]
pub enum IndexEvent {
    /// The walk found this many candidate files.
    Found {
        files: usize,
    },
    /// A file was looked at (indexed, unchanged or skipped).
    File {
        path: PathBuf,
        done: usize,
        total: usize,
        chunks: usize,
    },
    Skipped {
        path: PathBuf,
        why: &'static str,
    },
    Removed {
        path: PathBuf,
    },
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexReport {
    pub name: String,
    pub files: usize,
    pub indexed: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub skipped_binary: usize,
    pub skipped_large: usize,
    pub chunks_added: usize,
    pub chunks_total: usize,
    pub tokens_embedded: u64,
    pub seconds: f64,
    /// Chunks and files embedded per second of the pass.
    pub chunks_per_s: f64,
    pub docs_per_s: f64,
    /// A signal stopped the pass; what it stored stays.
    pub interrupted: bool,
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

/// The embedding model's tokens as text-splitter's measure.
struct TokenSizer<'a>(&'a BertTokenizer);

impl ChunkSizer for TokenSizer<'_> {
    fn size(&self, chunk: &str) -> usize {
        self.0.count(chunk)
    }
}

/// A chunk of a file: 1-based inclusive lines, and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub start_line: usize,
    pub end_line: usize,
    pub text: String,
}

/// Cut `text` into chunks of at most `opts.tokens` tokens.
pub fn chunk_text(
    text: &str,
    tok: &BertTokenizer,
    opts: &ChunkOptions,
) -> Result<Vec<Chunk>, IndexError> {
    let config = ChunkConfig::new(opts.tokens)
        .with_overlap(opts.overlap)
        .map_err(|e| IndexError::Chunking(format!("embed.chunk_overlap: {e}")))?
        .with_sizer(TokenSizer(tok));
    let splitter = TextSplitter::new(config);
    // Chunks come in order of their starts (an overlap starts a chunk
    // inside the previous one, still after its start): count lines from a
    // cursor, not from the text's start each time (a 1 MiB file has
    // hundreds of chunks).
    let newlines = |s: &str| s.bytes().filter(|&b| b == b'\n').count();
    let (mut at, mut line) = (0usize, 1usize);
    Ok(splitter
        .chunk_indices(text)
        .map(|(offset, piece)| {
            if offset >= at {
                line += newlines(&text[at..offset]);
            } else {
                line -= newlines(&text[offset..at]);
            }
            at = offset;
            let lines = newlines(piece.trim_end_matches('\n'));
            Chunk {
                start_line: line,
                end_line: line + lines,
                text: piece.to_string(),
            }
        })
        .collect())
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
pub struct Index {
    pub name: String,
    pub path: PathBuf,
    db: Connection,
}

fn vec_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A file's content if it is text worth indexing; why not otherwise.
fn read_text(path: &Path, max: u64) -> Result<Result<String, &'static str>, std::io::Error> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > max {
        return Ok(Err("larger than embed.max_file_kib"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    if bytes[..bytes.len().min(SNIFF_BYTES)].contains(&0) {
        return Ok(Err("binary"));
    }
    Ok(String::from_utf8(bytes).map_err(|_| "binary"))
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

    /// Refuse to mix vectors of another model; an empty index takes this one.
    pub fn bind_model(&self, model: &str, dim: usize, rebuild: bool) -> Result<(), IndexError> {
        match self.model()? {
            Some((m, d)) if (m != model || d != dim) && !rebuild => Err(IndexError::ModelChanged {
                name: self.name.clone(),
                built: m,
                built_dim: d,
                now: model.to_string(),
                now_dim: dim,
            }),
            Some((m, d)) if m == model && d == dim && !rebuild => Ok(()),
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

    /// Bring the index up to date with the files under `roots`.
    pub fn update(
        &mut self,
        roots: &[PathBuf],
        embedder: &mut Embedder,
        opts: &ChunkOptions,
        sink: &mut dyn FnMut(IndexEvent),
    ) -> Result<IndexReport, IndexError> {
        let t0 = Instant::now();
        let mut report = IndexReport {
            name: self.name.clone(),
            ..Default::default()
        };
        let mut paths = Vec::new();
        for root in roots {
            let abs = root
                .canonicalize()
                .map_err(|_| IndexError::MissingRoot(root.clone()))?;
            let walker = ignore::WalkBuilder::new(&abs)
                .require_git(false)
                .sort_by_file_name(|a, b| a.cmp(b))
                .build();
            for entry in walker.flatten() {
                if entry.file_type().is_some_and(|t| t.is_file()) {
                    paths.push(entry.into_path());
                }
            }
        }
        paths.sort();
        paths.dedup();
        report.files = paths.len();
        sink(IndexEvent::Found { files: paths.len() });
        self.set_meta(
            "roots",
            &serde_json::to_string(
                &roots
                    .iter()
                    .map(|r| r.canonicalize().unwrap_or_else(|_| r.clone()))
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_default(),
        )?;

        let known: HashMap<String, (i64, i64, i64, String)> = {
            let mut st = self
                .db
                .prepare("SELECT path, id, size, mtime_ns, sha256 FROM files")
                .map_err(self.sql())?;
            st.query_map([], |r| {
                Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            })
            .map_err(self.sql())?
            .collect::<Result<_, _>>()
            .map_err(self.sql())?
        };
        // Files waiting for their vectors: (path, size, mtime, hash, chunks).
        let mut pending: Vec<(String, i64, i64, String, Vec<Chunk>)> = Vec::new();
        let mut pending_chunks = 0;
        let mut docs = 0usize;
        let seen: HashSet<String> = paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let total = paths.len();
        for (i, path) in paths.iter().enumerate() {
            if crate::supervisor::interrupted() {
                // Stored files stay; the rest waits for the next pass.
                report.interrupted = true;
                pending.clear();
                break;
            }
            let key = path.to_string_lossy().into_owned();
            let meta = match std::fs::metadata(path) {
                Ok(m) => m,
                // Gone between the walk and now: the next pass drops it.
                Err(_) => continue,
            };
            let (size, mtime) = (meta.len() as i64, mtime_ns(&meta));
            if let Some((_, s, m, _)) = known.get(&key)
                && *s == size
                && *m == mtime
            {
                report.unchanged += 1;
                sink(IndexEvent::File {
                    path: path.clone(),
                    done: i + 1,
                    total,
                    chunks: 0,
                });
                continue;
            }
            let read = match read_text(path, opts.max_file_bytes) {
                Ok(r) => r,
                // Unreadable (permissions, gone): skipped, the pass goes on.
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot read: {e}");
                    Err("unreadable")
                }
            };
            let text = match read {
                Ok(t) => t,
                Err("unreadable") => {
                    sink(IndexEvent::Skipped {
                        path: path.clone(),
                        why: "unreadable",
                    });
                    continue;
                }
                Err(why) => {
                    if why == "binary" {
                        report.skipped_binary += 1;
                    } else {
                        report.skipped_large += 1;
                    }
                    if let Some((id, ..)) = known.get(&key) {
                        self.remove_file(*id)?;
                    }
                    sink(IndexEvent::Skipped {
                        path: path.clone(),
                        why,
                    });
                    continue;
                }
            };
            let hash = format!("{:x}", Sha256::digest(text.as_bytes()));
            if let Some((id, _, _, h)) = known.get(&key)
                && *h == hash
            {
                // Touched, not changed: keep the chunks, note the new time.
                self.db
                    .execute(
                        "UPDATE files SET size = ?1, mtime_ns = ?2 WHERE id = ?3",
                        params![size, mtime, id],
                    )
                    .map_err(self.sql())?;
                report.unchanged += 1;
                continue;
            }
            let chunks = chunk_text(&text, embedder.tokenizer(), opts)?;
            pending_chunks += chunks.len();
            pending.push((key, size, mtime, hash, chunks));
            if pending_chunks >= EMBED_GROUP {
                docs += pending.len();
                self.flush(&mut pending, embedder, &mut report, sink, i + 1, total)?;
                pending_chunks = 0;
            }
        }
        docs += pending.len();
        self.flush(&mut pending, embedder, &mut report, sink, total, total)?;

        for (path, (id, ..)) in &known {
            if !seen.contains(path) && !report.interrupted {
                self.remove_file(*id)?;
                report.removed += 1;
                sink(IndexEvent::Removed {
                    path: PathBuf::from(path),
                });
            }
        }
        report.chunks_total = self.counts()?.1;
        report.seconds = t0.elapsed().as_secs_f64();
        report.chunks_per_s = report.chunks_added as f64 / report.seconds.max(1e-9);
        report.docs_per_s = docs as f64 / report.seconds.max(1e-9);
        Ok(report)
    }

    fn remove_file(&self, id: i64) -> Result<(), IndexError> {
        self.db
            .execute("DELETE FROM files WHERE id = ?1", [id])
            .map(|_| ())
            .map_err(self.sql())
    }

    /// Embed the pending files' chunks and store each file in a transaction.
    fn flush(
        &mut self,
        pending: &mut Vec<(String, i64, i64, String, Vec<Chunk>)>,
        embedder: &mut Embedder,
        report: &mut IndexReport,
        sink: &mut dyn FnMut(IndexEvent),
        done: usize,
        total: usize,
    ) -> Result<(), IndexError> {
        if pending.is_empty() {
            return Ok(());
        }
        let texts: Vec<&str> = pending
            .iter()
            .flat_map(|(.., c)| c.iter().map(|c| c.text.as_str()))
            .collect();
        let tokens_before = embedder.stats.tokens;
        let vectors = embedder.embed(&texts, TextKind::Document)?;
        report.tokens_embedded += embedder.stats.tokens - tokens_before;
        let mut vectors = vectors.into_iter();
        let path = self.path.clone();
        let sql = |source| IndexError::Sql {
            path: path.clone(),
            source,
        };
        for (key, size, mtime, hash, chunks) in pending.drain(..) {
            let tx = self.db.transaction().map_err(sql)?;
            tx.execute("DELETE FROM files WHERE path = ?1", [&key])
                .map_err(sql)?;
            tx.execute(
                "INSERT INTO files (path, size, mtime_ns, sha256, chunks) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key, size, mtime, hash, chunks.len() as i64],
            )
            .map_err(sql)?;
            let file_id = tx.last_insert_rowid();
            {
                let mut ins = tx
                    .prepare(
                        "INSERT INTO chunks (file_id, start_line, end_line, text, vector)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(sql)?;
                for c in &chunks {
                    let v = vectors.next().unwrap_or_default();
                    ins.execute(params![
                        file_id,
                        c.start_line as i64,
                        c.end_line as i64,
                        c.text,
                        vec_bytes(&v)
                    ])
                    .map_err(sql)?;
                }
            }
            tx.commit().map_err(sql)?;
            report.indexed += 1;
            report.chunks_added += chunks.len();
            sink(IndexEvent::File {
                path: PathBuf::from(&key),
                done,
                total,
                chunks: chunks.len(),
            });
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lines_match_their_offsets_with_overlap() {
        use crate::model::test_bert::{BertPreset, TestBertOptions, make_test_bert};
        let dir = tempfile::tempdir().expect("tempdir");
        make_test_bert(
            dir.path(),
            &TestBertOptions {
                preset: BertPreset::Tiny,
                pooling: crate::model::bert::Pooling::Mean,
                seed: 1,
                dtype: crate::model::test_model::WeightDtype::F32,
            },
        )
        .expect("bert");
        let tok = BertTokenizer::from_dir(dir.path(), 128).expect("tokenizer");
        let text: String = (0..200)
            .map(|i| format!("line {i} of the text with some words\n"))
            .collect();
        let opts = ChunkOptions {
            tokens: 20,
            overlap: 6,
            max_file_bytes: u64::MAX,
        };
        let chunks = chunk_text(&text, &tok, &opts).expect("chunks");
        assert!(chunks.len() > 10);
        let lines: Vec<&str> = text.lines().collect();
        for c in &chunks {
            // The chunk's text starts in its first line and ends in its last.
            let first = c.text.lines().next().unwrap_or_default().trim();
            let last = c.text.lines().last().unwrap_or_default().trim();
            assert!(lines[c.start_line - 1].contains(first), "{c:?}");
            assert!(lines[c.end_line - 1].contains(last), "{c:?}");
        }
    }
}
