//! Hub ids as model sources, against a loopback server that answers the
//! routes hf-hub uses the way the Hub does: `/api/models/{id}/revision/{rev}`
//! (siblings + commit sha), `/{id}/resolve/{rev}/{file}` with ETag and
//! X-Repo-Commit, a 302 to a CDN route for weights (X-Linked-Etag,
//! X-Linked-Size), range requests answered with 206 and Content-Range, 401
//! for a gated repo without a token and 404 for a missing one.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hybrid_tui::hub::{self, FileProgress, HubError, HubOptions};
use hybrid_tui::model::Arch;
use hybrid_tui::model::test_model::{Preset, TestModelOptions, WeightDtype, make_test_model};
use sha2::{Digest, Sha256};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_token";

#[derive(Default)]
struct State {
    /// repo id → file name → bytes.
    repos: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    gated: Vec<String>,
    /// "GET /path range" per request.
    log: Vec<String>,
}

struct FakeHub {
    port: u16,
    state: Arc<Mutex<State>>,
    /// Cut the next full-body weight download in half.
    interrupt: Arc<AtomicBool>,
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

impl FakeHub {
    fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let interrupt = Arc::new(AtomicBool::new(false));
        let (s, i) = (state.clone(), interrupt.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, i) = (s.clone(), i.clone());
                std::thread::spawn(move || handle(conn, port, &s, &i));
            }
        });
        FakeHub {
            port,
            state,
            interrupt,
        }
    }

    fn add_repo(&self, id: &str, dir: &Path, gated: bool) {
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            files.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            );
        }
        // Files a bake does not need: never fetched.
        files.insert("README.md".into(), b"# test model\n".to_vec());
        files.insert("pytorch_model.bin".into(), vec![0u8; 64]);
        let mut st = self.state.lock().unwrap();
        st.repos.insert(id.into(), files);
        if gated {
            st.gated.push(id.into());
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

fn respond(c: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = c.write_all(head.as_bytes());
    let _ = c.write_all(body);
}

/// Serve `data` honouring `Range: bytes=a-b` / `bytes=a-`.
fn serve_bytes(
    c: &mut TcpStream,
    data: &[u8],
    range: Option<&str>,
    mut headers: Vec<(String, String)>,
    interrupt: &AtomicBool,
) {
    let total = data.len();
    if total == 0 {
        headers.push(("Content-Range".into(), "bytes */0".into()));
        respond(c, "200 OK", &headers, b"");
        return;
    }
    let (start, end) = match range.and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = if b.is_empty() {
                total - 1
            } else {
                b.parse().unwrap_or(total - 1)
            };
            (a.min(total), b.min(total.saturating_sub(1)))
        }
        None => (0, total.saturating_sub(1)),
    };
    let body = &data[start..=end];
    headers.push(("Accept-Ranges".into(), "bytes".into()));
    headers.push((
        "Content-Range".into(),
        format!("bytes {start}-{end}/{total}"),
    ));
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    if body.len() > 1 && interrupt.swap(false, Ordering::SeqCst) {
        // Announce the whole body, send half, hang up.
        let mut head = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = c.write_all(head.as_bytes());
        let _ = c.write_all(&body[..body.len() / 2]);
        let _ = c.flush();
        return;
    }
    respond(c, status, &headers, body);
}

fn handle(mut c: TcpStream, port: u16, state: &Mutex<State>, interrupt: &AtomicBool) {
    let mut reader = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    let authorized =
        headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"));
    let st = {
        let mut st = state.lock().unwrap();
        st.log
            .push(format!("GET {path} {}", range.clone().unwrap_or_default()));
        (st.repos.clone(), st.gated.clone())
    };
    let (repos, gated) = st;
    let repo_error = |c: &mut TcpStream, id: &str| -> bool {
        if !repos.contains_key(id) {
            respond(
                c,
                "404 Not Found",
                &[("X-Error-Code".into(), "RepoNotFound".into())],
                b"{\"error\":\"Repository not found\"}",
            );
            return true;
        }
        if gated.iter().any(|g| g == id) && !authorized {
            respond(
                c,
                "401 Unauthorized",
                &[("X-Error-Code".into(), "GatedRepo".into())],
                b"{\"error\":\"Access to this model is restricted\"}",
            );
            return true;
        }
        false
    };
    if let Some(rest) = path.strip_prefix("/api/models/") {
        // {org}/{name}/revision/{rev}
        let parts: Vec<&str> = rest.split('/').collect();
        let id = format!("{}/{}", parts[0], parts.get(1).unwrap_or(&""));
        if repo_error(&mut c, &id) {
            return;
        }
        let siblings: Vec<serde_json::Value> = repos[&id]
            .keys()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        let body = serde_json::json!({ "id": id, "sha": COMMIT, "siblings": siblings }).to_string();
        respond(
            &mut c,
            "200 OK",
            &[("Content-Type".into(), "application/json".into())],
            body.as_bytes(),
        );
    } else if let Some(hash) = path.strip_prefix("/cdn/") {
        let data = repos
            .values()
            .flat_map(|f| f.values())
            .find(|d| sha256_hex(d) == hash)
            .cloned();
        match data {
            Some(d) => serve_bytes(
                &mut c,
                &d,
                range.as_deref(),
                vec![("ETag".into(), format!("\"{hash}\""))],
                interrupt,
            ),
            None => respond(&mut c, "404 Not Found", &[], b""),
        }
    } else {
        // /{org}/{name}/resolve/{rev}/{file}
        let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
        if parts.len() < 5 || parts[2] != "resolve" {
            respond(&mut c, "404 Not Found", &[], b"");
            return;
        }
        let id = format!("{}/{}", parts[0], parts[1]);
        if repo_error(&mut c, &id) {
            return;
        }
        let Some(data) = repos[&id].get(parts[4]) else {
            respond(
                &mut c,
                "404 Not Found",
                &[("X-Error-Code".into(), "EntryNotFound".into())],
                b"",
            );
            return;
        };
        let commit = ("X-Repo-Commit".to_string(), COMMIT.to_string());
        if parts[4].ends_with(".safetensors") {
            let hash = sha256_hex(data);
            respond(
                &mut c,
                "302 Found",
                &[
                    commit,
                    ("X-Linked-Etag".into(), format!("\"{hash}\"")),
                    ("X-Linked-Size".into(), data.len().to_string()),
                    (
                        "Location".into(),
                        format!("http://127.0.0.1:{port}/cdn/{hash}"),
                    ),
                ],
                b"",
            );
        } else {
            // Small files: a git blob id as the ETag.
            let etag = sha256_hex(data)[..40].to_string();
            serve_bytes(
                &mut c,
                data,
                range.as_deref(),
                vec![commit, ("ETag".into(), format!("\"{etag}\""))],
                interrupt,
            );
        }
    }
}

/// The tiny qwen2 model in three weight shards with an index.
fn sharded_model() -> PathBuf {
    // Tests run in parallel: one makes it, the others wait for it.
    static MADE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = common::fixtures().join("hub-src");
    if !dir.join("config.json").exists() {
        make_test_model(
            &dir,
            &TestModelOptions {
                arch: Arch::Qwen2,
                preset: Preset::Tiny,
                seed: 11,
                dtype: WeightDtype::Bf16,
                max_shard_bytes: 1 << 20,
            },
        )
        .unwrap();
    }
    dir
}

fn opts(hub: &FakeHub, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: hub.endpoint(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
    }
}

fn no_progress() -> impl FnMut(FileProgress) {
    |_| {}
}

#[test]
fn a_model_is_fetched_by_id_into_the_hugging_face_layout_then_served_from_it() {
    let src = sharded_model();
    let shards = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .count();
    assert!(
        shards >= 2,
        "the test model should be sharded, has {shards}"
    );
    let hub = FakeHub::start();
    hub.add_repo("acme/tiny-chat", &src, false);
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(&hub, tmp.path());
    let mut seen = BTreeMap::new();
    let snap = hub::fetch(&o, "acme/tiny-chat", "main", &mut |p: FileProgress| {
        seen.insert(p.file.clone(), (p.done, p.total));
    })
    .unwrap();
    let repo_dir = tmp.path().join("models--acme--tiny-chat");
    assert_eq!(snap, repo_dir.join("snapshots").join(COMMIT));
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let got = std::fs::read(snap.join(&name)).unwrap_or_else(|_| panic!("{name} missing"));
        assert_eq!(got, std::fs::read(e.path()).unwrap(), "{name} differs");
        // Snapshot entries point into blobs/, as huggingface_hub lays them out.
        assert!(
            std::fs::symlink_metadata(snap.join(&name))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
    assert!(!snap.join("README.md").exists() && !snap.join("pytorch_model.bin").exists());
    assert!(
        seen.values()
            .all(|(done, total)| done == total && *total > 0),
        "{seen:?}"
    );
    let reqs = hub.requests();
    assert!(
        reqs.iter()
            .all(|r| !r.contains("README") && !r.contains("pytorch_model")),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter().any(|r| r.starts_with("GET /cdn/")),
        "weights came through the redirect"
    );

    // Second run: from the cache, no request at all.
    let before = hub.requests().len();
    let again = hub::fetch(&o, "acme/tiny-chat", "main", &mut no_progress()).unwrap();
    assert_eq!(again, snap);
    assert_eq!(
        hub.requests().len(),
        before,
        "the second run asked the server"
    );

    // HF_HUB_OFFLINE: served from the cache; a model not there is a clear error.
    let off = HubOptions {
        offline: true,
        ..o.clone()
    };
    assert_eq!(
        hub::fetch(&off, "acme/tiny-chat", "main", &mut no_progress()).unwrap(),
        snap
    );
    let err = hub::fetch(&off, "acme/other", "main", &mut no_progress()).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
    assert_eq!(hub.requests().len(), before);
}

#[test]
fn an_interrupted_download_is_resumed_with_a_range_request() {
    let src = sharded_model();
    let hub = FakeHub::start();
    hub.add_repo("acme/tiny-chat", &src, false);
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(&hub, tmp.path());
    hub.interrupt.store(true, Ordering::SeqCst);
    let err = hub::fetch(&o, "acme/tiny-chat", "main", &mut no_progress()).unwrap_err();
    assert!(err.to_string().contains("run again to resume"), "{err}");
    let parts: Vec<PathBuf> = std::fs::read_dir(tmp.path().join("models--acme--tiny-chat/blobs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "part"))
        .collect();
    assert_eq!(parts.len(), 1, "the cut download leaves its .part");
    let have = std::fs::metadata(&parts[0]).unwrap().len();
    assert!(have > 0);
    let snap = hub::fetch(&o, "acme/tiny-chat", "main", &mut no_progress()).unwrap();
    let resumed = hub
        .requests()
        .iter()
        .any(|r| r.ends_with(&format!("bytes={have}-")));
    assert!(
        resumed,
        "no request resumed at byte {have}: {:#?}",
        hub.requests()
    );
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        assert_eq!(
            std::fs::read(snap.join(e.file_name())).unwrap(),
            std::fs::read(e.path()).unwrap()
        );
    }
}

#[test]
fn gated_missing_and_unreachable_repos_say_what_to_do() {
    let src = sharded_model();
    let hub = FakeHub::start();
    hub.add_repo("acme/gated", &src, true);
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(&hub, tmp.path());

    let err = hub::fetch(&o, "acme/gated", "main", &mut no_progress()).unwrap_err();
    assert!(matches!(err, HubError::Gated { status: 401, .. }), "{err}");
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    let with_token = HubOptions {
        token: Some(TOKEN.into()),
        ..o.clone()
    };
    hub::fetch(&with_token, "acme/gated", "main", &mut no_progress()).expect("the token opens it");

    let err = hub::fetch(&o, "acme/nope", "main", &mut no_progress()).unwrap_err();
    assert!(matches!(err, HubError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("acme/nope@main was not found"),
        "{err}"
    );

    // A port nobody listens on: connection refused.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = HubOptions {
        endpoint: format!("http://127.0.0.1:{closed}"),
        ..o
    };
    let err = hub::fetch(&dead, "acme/elsewhere", "main", &mut no_progress()).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err}");
    assert!(err.to_string().contains("HF_HUB_OFFLINE=1"), "{err}");
}

fn cli(home: &Path, hub: &FakeHub) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("hybrid-tui").unwrap();
    c.env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("HF_HOME", home.join("hf"))
        .env("HF_ENDPOINT", hub.endpoint())
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HYBRID_TUI_PROFILE");
    c
}

/// `hybrid-tui models --json`, parsed.
fn models_json(home: &Path, hub: &FakeHub) -> serde_json::Value {
    let out = cli(home, hub).args(["models", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// End to end: `generate --model org/name` fetches, bakes into our cache,
/// generates; `models` lists both; the default model offline falls back to
/// the demo model and says so.
#[test]
fn generate_takes_an_id_and_models_lists_the_cache() {
    let src = sharded_model();
    let hub = FakeHub::start();
    hub.add_repo("acme/tiny-chat", &src, false);
    let home = tempfile::tempdir().unwrap();
    let out = cli(home.path(), &hub)
        .args([
            "generate",
            "--model",
            "acme/tiny-chat",
            "--prompt",
            "Hello",
            "-n",
            "4",
            "--temperature",
            "0",
            "--ignore-eos",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("fetching acme/tiny-chat@main"), "{err}");
    assert!(err.contains("baking"), "{err}");
    assert!(
        home.path()
            .join("hf/hub/models--acme--tiny-chat/refs/main")
            .exists()
    );

    let v = models_json(home.path(), &hub);
    let list = v.as_array().unwrap();
    let baked = list
        .iter()
        .find(|m| m["kind"] == "baked")
        .expect("a baked entry");
    assert!(
        baked["source"]
            .as_str()
            .unwrap()
            .starts_with("acme/tiny-chat@0123456789ab"),
        "{baked}"
    );
    assert!(
        baked["precision"]
            .as_str()
            .unwrap()
            .starts_with("int4_sym g128"),
        "{baked}"
    );
    assert!(baked["bytes"].as_u64().unwrap() > 0);
    let dl = list
        .iter()
        .find(|m| m["kind"] == "download")
        .expect("the download");
    assert_eq!(dl["name"], "acme/tiny-chat");

    // Remove the bake; the list no longer has it.
    let name = baked["name"].as_str().unwrap().to_string();
    cli(home.path(), &hub)
        .args(["models", "--remove", &name])
        .assert()
        .success();
    let v = models_json(home.path(), &hub);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|m| m["name"] != name.as_str())
    );
    cli(home.path(), &hub)
        .args(["models", "--remove", "no-such-model"])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "no cached model is called 'no-such-model'",
        ));

    // The default model (an id this server does not have) cannot be had:
    // the first run falls back to the demo model and says why.
    let out = cli(home.path(), &hub).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("could not get Qwen/Qwen2.5-0.5B-Instruct"),
        "{text}"
    );
    assert!(text.contains("Using the demo model instead"), "{text}");
}
