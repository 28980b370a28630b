//! A pass over the files of an index ([`Index::update`]): walk, skip,
//! chunk, embed, store each file in a transaction, drop what is gone.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use rusqlite::params;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Index, IndexError, vec_bytes};
use crate::embed::chunk::{Chunk, ChunkOptions, chunk_text};
use crate::embed::{Embedder, TextKind};

/// Bytes looked at for a NUL (a binary file).
const SNIFF_BYTES: usize = 8192;
/// Chunks embedded per call (several files' chunks go together).
const EMBED_GROUP: usize = 64;

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
}
