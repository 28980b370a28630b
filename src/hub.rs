//! The Hugging Face Hub client: the rules of ids (`org/name[@revision]`).
//!
//! Files come through hf-hub's blocking client into the standard Hugging
//! Face cache layout (`models--org--name/{blobs,snapshots,refs}`), so models
//! fetched by Python tools are reused and ours are reusable by them. Only
//! the files a bake needs are fetched: config, tokenizer and chat-template
//! files, the generation config, and the safetensors with their index. A
//! download that stops leaves a `.part` file that the next run resumes with
//! a range request. Environment, as huggingface_hub reads it: HF_HOME,
//! HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN (else `$HF_HOME/token`),
//! HF_HUB_OFFLINE.
//!
//! [`fetch`]: if the cache already holds a complete snapshot for the
//! revision's ref (config, tokenizer, every shard the index names) it is
//! returned without a request; under HF_HUB_OFFLINE it stops there with a
//! "not in the cache" error; otherwise `/api/models/{id}/revision/{rev}`
//! gives the file list, [`wanted`] keeps what a bake needs, and hf-hub
//! downloads each (metadata by a `Range: bytes=0-0` GET, the blob into
//! `blobs/<etag>.part`, appended with `Range: bytes=N-` when resumed,
//! renamed, symlinked from `snapshots/<commit>/`, `refs/<rev>` written).
//! ureq's errors become [`HubError`]s: 401/403 gated (accept the terms, set
//! HF_TOKEN), 404 not found, transport errors (check the network, or set
//! HF_HUB_OFFLINE), an interrupted body ("run again to resume").

use std::path::{Path, PathBuf};

use hf_hub::api::Progress;
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

/// `id` (`org/name[@revision]`, split into its parts) as the Hub allows
/// it; the error names the rule broken.
pub fn check_id(id: &str, org: &str, name: &str, revision: &str) -> Result<(), HubError> {
    check_name(org, "organization")
        .and_then(|()| check_name(name, "name"))
        .and_then(|()| check_revision(revision))
        .map_err(|message| HubError::BadId {
            id: id.to_string(),
            message,
        })
}

/// A repository's organization or name as the Hub allows it: 1-96 letters,
/// digits, `-`, `_` and `.`, neither starting nor ending with `-` or `.`,
/// without `--` or `..`, not ending in `.git`.
fn check_name(part: &str, what: &str) -> Result<(), String> {
    let why = if part.len() > 96 {
        Some("is longer than 96 characters")
    } else if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        Some("starts or ends with '-' or '.'")
    } else if part.contains("--") || part.contains("..") {
        Some("holds '--' or '..'")
    } else if part.ends_with(".git") {
        Some("ends in '.git'")
    } else {
        None
    };
    match why {
        Some(w) => Err(format!("the {what} '{part}' {w}")),
        None => Ok(()),
    }
}

/// A revision as git allows a branch or tag name (or a commit hash): no
/// `..`, `@{`, spaces, control characters or any of `~^:?*[\`; no empty
/// part between slashes, none starting with `.` or ending in `.lock`; at
/// most 255 bytes. (`refs/pr/1` is one.)
fn check_revision(rev: &str) -> Result<(), String> {
    let why = if rev.len() > 255 {
        Some("is longer than 255 bytes".to_string())
    } else if rev == "@" || rev.contains("..") || rev.contains("@{") {
        Some("holds '..' or '@{'".to_string())
    } else if let Some(c) = rev
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(*c))
    {
        Some(format!("holds the character {c:?}"))
    } else if rev
        .split('/')
        .any(|part| part.is_empty() || part.starts_with('.') || part.ends_with(".lock"))
    {
        Some("has an empty part, a part starting with '.' or ending in '.lock'".to_string())
    } else if rev.ends_with('.') {
        Some("ends with '.'".to_string())
    } else {
        None
    };
    match why {
        Some(w) => Err(format!(
            "the revision '{rev}' {w}: give a branch, tag or commit (e.g. main, v1.0, refs/pr/1)"
        )),
        None => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "{repo} is gated or private: {endpoint} refused it (HTTP {status}). Accept its terms on the model's page, then set HF_TOKEN to a token with read access (or put it in {token_file})"
    )]
    Gated {
        repo: String,
        endpoint: String,
        status: u16,
        token_file: String,
    },
    #[error(
        "{repo}@{revision} was not found on {endpoint} (HTTP 404): check the id's spelling and the revision"
    )]
    NotFound {
        repo: String,
        revision: String,
        endpoint: String,
    },
    #[error(
        "cannot reach {endpoint} for {repo}: {message}. Check the network (or proxy), or set HF_HUB_OFFLINE=1 to use only models already in {cache}"
    )]
    Network {
        repo: String,
        endpoint: String,
        message: String,
        cache: String,
    },
    #[error(
        "HF_HUB_OFFLINE is set and {repo}@{revision} is not complete in the cache ({cache}): unset HF_HUB_OFFLINE to download it"
    )]
    NotCached {
        repo: String,
        revision: String,
        cache: String,
    },
    #[error("{repo}: {message}")]
    Other { repo: String, message: String },
    #[error(
        "'{id}' is not a valid Hugging Face id: {message}. An id is org/name[@revision]; a local directory must exist (or start with ./ or /)"
    )]
    BadId { id: String, message: String },
}

/// The client's settings, read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    pub endpoint: String,
    /// The hub cache (holds models--org--name folders).
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    pub offline: bool,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

impl HubOptions {
    pub fn from_env() -> HubOptions {
        let home = env("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            env("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("huggingface")
        });
        let cache_dir = env("HF_HUB_CACHE")
            .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token = env("HF_TOKEN")
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                std::fs::read_to_string(home.join("token"))
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let offline = env("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        HubOptions {
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache_dir,
            token,
            offline,
        }
    }

    fn token_file(&self) -> String {
        env("HF_HOME")
            .map(|h| format!("{h}/token"))
            .unwrap_or_else(|| "~/.cache/huggingface/token".into())
    }
}

/// Is this file one a bake needs?
pub fn wanted(name: &str) -> bool {
    // An embedding model's pooling (sentence-transformers).
    if name == "1_Pooling/config.json" {
        return true;
    }
    if name.contains('/') {
        return false;
    }
    matches!(
        name,
        "config.json"
            | "generation_config.json"
            | "tokenizer.json"
            | "tokenizer_config.json"
            | "special_tokens_map.json"
            | "chat_template.jinja"
            | "chat_template.json"
            | "model.safetensors.index.json"
            | "vocab.txt"
            | "modules.json"
            | "config_sentence_transformers.json"
            | "sentence_bert_config.json"
    ) || name.ends_with(".safetensors")
}

/// One file's download progress (bytes so far of total).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProgress {
    pub file: String,
    pub done: u64,
    pub total: u64,
}

struct Reporter<'a> {
    file: String,
    done: u64,
    total: u64,
    sink: &'a mut dyn FnMut(FileProgress),
}

impl Progress for Reporter<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        self.file = filename.to_string();
        self.total = size as u64;
        self.done = 0;
        self.emit();
    }
    fn update(&mut self, size: usize) {
        self.done += size as u64;
        self.emit();
    }
    fn finish(&mut self) {
        self.done = self.total;
        self.emit();
    }
}

impl Reporter<'_> {
    fn emit(&mut self) {
        (self.sink)(FileProgress {
            file: self.file.clone(),
            done: self.done,
            total: self.total,
        });
    }
}

/// The snapshot folder of `repo@revision` if the cache holds every file a
/// bake needs (config, tokenizer, and all weight shards the index names).
pub fn cached_snapshot(opts: &HubOptions, repo: &str, revision: &str) -> Option<PathBuf> {
    let cache = Cache::new(opts.cache_dir.clone());
    let r = cache.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let config = r.get("config.json")?;
    let snap = config.parent()?.to_path_buf();
    if !snap.join("tokenizer.json").exists() {
        return None;
    }
    let index = snap.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let shards: std::collections::BTreeSet<&str> = v["weight_map"]
            .as_object()?
            .values()
            .filter_map(|s| s.as_str())
            .collect();
        if shards.iter().all(|s| snap.join(s).exists()) {
            return Some(snap);
        }
        return None;
    }
    snap.join("model.safetensors").exists().then_some(snap)
}

fn map_err(e: ApiError, repo: &str, revision: &str, opts: &HubOptions) -> HubError {
    if let ApiError::RequestError(boxed) = &e {
        match boxed.as_ref() {
            ureq::Error::Status(status @ (401 | 403), _) => {
                return HubError::Gated {
                    repo: repo.into(),
                    endpoint: opts.endpoint.clone(),
                    status: *status,
                    token_file: opts.token_file(),
                };
            }
            ureq::Error::Status(404, _) => {
                return HubError::NotFound {
                    repo: repo.into(),
                    revision: revision.into(),
                    endpoint: opts.endpoint.clone(),
                };
            }
            ureq::Error::Transport(t) => {
                return HubError::Network {
                    repo: repo.into(),
                    endpoint: opts.endpoint.clone(),
                    message: t.to_string(),
                    cache: opts.cache_dir.display().to_string(),
                };
            }
            _ => {}
        }
    }
    if let ApiError::IoError(io) = &e {
        return HubError::Network {
            repo: repo.into(),
            endpoint: opts.endpoint.clone(),
            message: format!("the download stopped ({io}); run again to resume it"),
            cache: opts.cache_dir.display().to_string(),
        };
    }
    HubError::Other {
        repo: repo.into(),
        message: e.to_string(),
    }
}

/// Make `repo@revision` available locally and return its snapshot folder:
/// from the cache without a request when it is complete there, else from
/// the Hub (progress per file through `progress`).
pub fn fetch(
    opts: &HubOptions,
    repo: &str,
    revision: &str,
    progress: &mut dyn FnMut(FileProgress),
) -> Result<PathBuf, HubError> {
    if let Some(snap) = cached_snapshot(opts, repo, revision) {
        return Ok(snap);
    }
    if opts.offline {
        return Err(HubError::NotCached {
            repo: repo.into(),
            revision: revision.into(),
            cache: opts.cache_dir.display().to_string(),
        });
    }
    let api = ApiBuilder::from_cache(Cache::new(opts.cache_dir.clone()))
        .with_endpoint(opts.endpoint.clone())
        .with_token(opts.token.clone())
        .with_progress(false)
        .build()
        .map_err(|e| map_err(e, repo, revision, opts))?;
    let api_repo = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info = api_repo
        .info()
        .map_err(|e| map_err(e, repo, revision, opts))?;
    let mut files: Vec<String> = info
        .siblings
        .iter()
        .map(|s| s.rfilename.clone())
        .filter(|f| wanted(f))
        .collect();
    files.sort();
    if !files.iter().any(|f| f == "config.json") {
        return Err(HubError::Other {
            repo: repo.into(),
            message: "the repository has no config.json: not a transformers model".into(),
        });
    }
    if !files.iter().any(|f| f.ends_with(".safetensors")) {
        return Err(HubError::Other {
            repo: repo.into(),
            message: "the repository has no .safetensors weights (only those are read)".into(),
        });
    }
    let mut snapshot = None;
    for f in &files {
        let reporter = Reporter {
            file: f.clone(),
            done: 0,
            total: 0,
            sink: &mut *progress,
        };
        let path = api_repo
            .download_with_progress(f, reporter)
            .map_err(|e| map_err(e, repo, revision, opts))?;
        snapshot = path.parent().map(Path::to_path_buf);
    }
    snapshot.ok_or_else(|| HubError::Other {
        repo: repo.into(),
        message: "no file was downloaded".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_needed_files_are_wanted() {
        for f in [
            "config.json",
            "tokenizer.json",
            "model-00001-of-00002.safetensors",
            "model.safetensors.index.json",
            "generation_config.json",
            "chat_template.jinja",
            "modules.json",
            "1_Pooling/config.json",
        ] {
            assert!(wanted(f), "{f}");
        }
        for f in [
            "pytorch_model.bin",
            "README.md",
            "original/consolidated.00.pth",
            "onnx/model.safetensors",
            ".gitattributes",
        ] {
            assert!(!wanted(f), "{f}");
        }
    }
}
