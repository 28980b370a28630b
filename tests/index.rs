//! `hybrid-tui index` and `search` as users run them, on a generated tree:
//! ignored, binary and oversized files, changes, touches and deletions, a
//! query that copies a chunk, and an indexer killed mid-run.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{app, children_of, fresh_seed};
use hybrid_tui::embed::index::Index;
use hybrid_tui::model::bert::Pooling;
use hybrid_tui::model::test_bert::{BertPreset, TestBertOptions, make_test_bert};
use hybrid_tui::model::test_model::{CORPUS, WeightDtype};
use rand::{Rng, SeedableRng};

/// A tiny BERT (Hugging Face layout: baked into the cache on first use).
fn bert(home: &Path) -> PathBuf {
    let dir = home.join("bert");
    make_test_bert(
        &dir,
        &TestBertOptions {
            preset: BertPreset::Tiny,
            pooling: Pooling::Mean,
            seed: 3,
            dtype: WeightDtype::F32,
        },
    )
    .expect("test bert");
    dir
}

fn words(rng: &mut impl Rng, n: usize) -> String {
    let all: Vec<&str> = CORPUS.split_whitespace().collect();
    let mut s = String::new();
    for i in 0..n {
        s.push_str(all[rng.random_range(0..all.len())]);
        s.push(if i % 12 == 11 { '\n' } else { ' ' });
    }
    s
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, bytes).expect("write");
}

/// `hybrid-tui` with the test BERT and small chunks.
fn run(home: &Path, model: &Path, args: &[&str]) -> assert_cmd::Command {
    let mut c = app(home);
    c.args(["--set", &format!("embed.model={}", model.display())])
        .args([
            "--set",
            "embed.chunk_tokens=24",
            "--set",
            "embed.chunk_overlap=4",
        ])
        .args([
            "--set",
            "embed.max_file_kib=8",
            "--set",
            "embed.query_instruction=",
        ])
        .args(args);
    c
}

fn json(c: &mut assert_cmd::Command) -> serde_json::Value {
    let out = c.output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| serde_json::from_str(&text).unwrap_or_else(|_| panic!("{e}: {text}")))
}

fn search(home: &Path, model: &Path, query: &str) -> serde_json::Value {
    let out = run(
        home,
        model,
        &["search", query, "--index", "t", "-k", "3", "--json"],
    )
    .output()
    .expect("search");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("search json")
}

/// `hybrid-tui ARGS` with the test BERT and small chunks, as a child process
/// (no output kept).
fn spawn(home: &Path, model: &Path, args: &[&str]) -> std::process::Child {
    #[allow(deprecated)]
    let bin = assert_cmd::cargo::cargo_bin("hybrid-tui");
    std::process::Command::new(bin)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("HYBRID_TUI_PROFILE")
        .args(["--set", &format!("embed.model={}", model.display())])
        .args([
            "--set",
            "embed.chunk_tokens=24",
            "--set",
            "embed.chunk_overlap=4",
        ])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn hybrid-tui")
}

/// One `index` pass over `tree` into index "t", its JSON report.
fn index_t(home: &Path, model: &Path, tree: &str) -> serde_json::Value {
    json(&mut run(
        home,
        model,
        &["index", tree, "--name", "t", "--json"],
    ))
}

#[test]
fn an_embedding_model_that_is_not_one_is_refused_by_name() {
    let home = tempfile::tempdir().expect("home");
    let root = home.path().join("tree");
    write(&root.join("a.txt"), "some words to index");
    let tree = root.display().to_string();
    // The chat demo model, refused before it is made.
    run(
        home.path(),
        Path::new("demo"),
        &["index", &tree, "--name", "t"],
    )
    .assert()
    .failure()
    .stderr(predicates::str::contains(
        "embed.model = \"demo\": the demo model is a chat model",
    ))
    .stderr(predicates::str::contains("BAAI/bge-small-en-v1.5"));
    assert!(
        !home.path().join("data/hybrid-tui/models").exists(),
        "the demo model was made for embed.model = demo"
    );
    let missing = home.path().join("no-such-model");
    run(home.path(), &missing, &["index", &tree, "--name", "t"])
        .assert()
        .failure()
        .stderr(predicates::str::contains(format!(
            "embed.model = {:?}: no such directory",
            missing.display().to_string()
        )));
}

#[test]
fn index_skips_what_it_should_finds_copied_chunks_and_follows_changes() {
    let seed = fresh_seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let home = tempfile::tempdir().expect("home");
    let model = bert(home.path());
    let root = home.path().join("tree");
    write(&root.join(".gitignore"), "ignored.txt\n");
    write(&root.join("ignored.txt"), words(&mut rng, 50));
    write(&root.join("notes.md"), words(&mut rng, 300));
    write(&root.join("src/lib.rs"), words(&mut rng, 120));
    write(
        &root.join("src/short.rs"),
        "fn main() { println!(\"hi\"); }\n",
    );
    let mut blob = words(&mut rng, 20).into_bytes();
    blob.extend([0u8, 1, 2, 255]);
    write(&root.join("data.bin"), blob);
    write(&root.join("big.txt"), words(&mut rng, 3000));
    let tree = root.to_string_lossy().into_owned();

    let r = index_t(home.path(), &model, &tree);
    assert_eq!(r["indexed"], 3, "{r} (seed {seed})");
    assert_eq!(r["skipped_binary"], 1, "{r}");
    assert_eq!(r["skipped_large"], 1, "{r}");
    assert!(r["chunks_added"].as_u64().unwrap_or(0) > 5, "{r}");

    // A query that copies a chunk finds that chunk first.
    let idx = Index::open_at("t", &home.path().join("data/hybrid-tui/index/t.sqlite"))
        .expect("the index database");
    assert_eq!(idx.integrity().expect("check"), "ok");
    let db = rusqlite::Connection::open(&idx.path).expect("open");
    let chunks: Vec<(String, i64, i64, String)> = db
        .prepare(
            "SELECT files.path, start_line, end_line, text FROM chunks JOIN files ON files.id = file_id",
        )
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .expect("chunks");
    assert!(chunks.iter().all(|c| !c.0.ends_with("ignored.txt")));
    for _ in 0..3 {
        let (path, start, end, text) = &chunks[rng.random_range(0..chunks.len())];
        let v = search(home.path(), &model, text);
        let top = &v["hits"][0];
        assert_eq!(
            top["path"].as_str(),
            Some(path.as_str()),
            "{v} (seed {seed})"
        );
        assert_eq!(
            (top["start_line"].as_i64(), top["end_line"].as_i64()),
            (Some(*start), Some(*end)),
            "{v}"
        );
        assert!(top["score"].as_f64().unwrap_or(0.0) > 0.9999, "{v}");
    }

    // Unchanged: nothing embedded again.
    let r = index_t(home.path(), &model, &tree);
    assert_eq!(
        (r["indexed"].as_u64(), r["unchanged"].as_u64()),
        (Some(0), Some(3)),
        "{r}"
    );
    // Touched but not changed: skipped by its hash. Changed: embedded again.
    std::thread::sleep(Duration::from_millis(20));
    let notes = std::fs::read(root.join("notes.md")).expect("read");
    write(&root.join("notes.md"), &notes);
    write(
        &root.join("src/short.rs"),
        "fn main() { println!(\"changed\"); }\n",
    );
    let r = index_t(home.path(), &model, &tree);
    assert_eq!(
        (r["indexed"].as_u64(), r["unchanged"].as_u64()),
        (Some(1), Some(2)),
        "{r}"
    );
    let v = search(
        home.path(),
        &model,
        "fn main() { println!(\"changed\"); }\n",
    );
    assert!(
        v["hits"][0]["path"]
            .as_str()
            .unwrap_or("")
            .ends_with("short.rs"),
        "{v}"
    );
    // Deleted: dropped.
    std::fs::remove_file(root.join("notes.md")).expect("rm");
    let r = index_t(home.path(), &model, &tree);
    assert_eq!(r["removed"], 1, "{r}");
    let left: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM files WHERE path LIKE '%notes.md'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(left, 0);
    // A different embedding model is refused until --rebuild.
    let other = home.path().join("bert2");
    make_test_bert(
        &other,
        &TestBertOptions {
            preset: BertPreset::Small,
            pooling: Pooling::Cls,
            seed: 4,
            dtype: WeightDtype::F32,
        },
    )
    .expect("second bert");
    run(home.path(), &other, &["index", &tree, "--name", "t"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("--rebuild"));
}

#[test]
fn killing_the_indexer_leaves_a_usable_index() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(fresh_seed());
    let home = tempfile::tempdir().expect("home");
    let model = bert(home.path());
    let root = home.path().join("many");
    let files = 300;
    for i in 0..files {
        write(&root.join(format!("f{i:03}.txt")), words(&mut rng, 200));
    }
    let tree = root.to_string_lossy().into_owned();
    let db_path = home.path().join("data/hybrid-tui/index/k.sqlite");
    // One chunk per call: slow enough to be killed mid-way.
    let mut child = spawn(
        home.path(),
        &model,
        &["--set", "embed.batch=1", "index", &tree, "--name", "k"],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let stored = loop {
        let n: i64 = rusqlite::Connection::open(&db_path)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM files", [], |r| r.get(0)))
            .unwrap_or(0);
        if n >= 10 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let executives = children_of(child.id());
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(
        stored >= 10 && stored < files,
        "{stored} of {files} files stored when killed"
    );
    // Its executive dies with it.
    std::thread::sleep(Duration::from_millis(300));
    for pid in executives {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true),
            "executive {pid} outlived its killed parent"
        );
    }
    let idx = Index::open_at("k", &db_path).expect("open after the kill");
    assert_eq!(idx.integrity().expect("check"), "ok");
    let (kept, _) = idx.counts().expect("counts");
    assert!(kept >= stored as usize);
    // The next run finishes the job and embeds only what is missing.
    let r = json(&mut run(
        home.path(),
        &model,
        &["index", &tree, "--name", "k", "--json"],
    ));
    assert_eq!(r["files"], files, "{r}");
    assert_eq!(
        r["indexed"].as_u64().unwrap_or(0) + r["unchanged"].as_u64().unwrap_or(0),
        files as u64,
        "{r}"
    );
    assert!(r["unchanged"].as_u64().unwrap_or(0) >= kept as u64, "{r}");
}

#[test]
fn watch_keeps_the_index_current_until_sigterm() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(fresh_seed());
    let home = tempfile::tempdir().expect("home");
    let model = bert(home.path());
    let root = home.path().join("watched");
    write(&root.join("a.txt"), words(&mut rng, 60));
    let tree = root.to_string_lossy().into_owned();
    let db_path = home.path().join("data/hybrid-tui/index/w.sqlite");
    let mut child = spawn(
        home.path(),
        &model,
        &["index", &tree, "--name", "w", "--watch"],
    );
    let files = |pattern: &str| -> i64 {
        rusqlite::Connection::open(&db_path)
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM files WHERE path LIKE ?1",
                    [pattern],
                    |r| r.get(0),
                )
            })
            .unwrap_or(0)
    };
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let t0 = Instant::now();
        while !cond() {
            assert!(t0.elapsed() < Duration::from_secs(60), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("the first pass", &|| files("%a.txt") == 1);
    // Give the watcher a moment to be in place after the first pass.
    std::thread::sleep(Duration::from_millis(500));
    write(&root.join("b.txt"), words(&mut rng, 60));
    wait("the new file indexed", &|| files("%b.txt") == 1);
    std::fs::remove_file(root.join("a.txt")).expect("rm");
    wait("the deleted file dropped", &|| files("%a.txt") == 0);
    let executives = children_of(child.id());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(143),
        "SIGTERM ends the watch as 128 + 15"
    );
    std::thread::sleep(Duration::from_millis(300));
    for pid in executives {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "executive {pid} left behind"
        );
    }
}
