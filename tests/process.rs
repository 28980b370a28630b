//! What is process-wide: shard B's CPU pool (configured once per process),
//! cores per shard, and /dev/shm cleanup. Its own test binary, and its tests
//! take turns (each start cleans up every stale segment it finds).

mod common;

use common::baked_model;
use hybrid_tui::affinity::allowed_cores;
use hybrid_tui::config::Settings;
use hybrid_tui::model::Arch;
use hybrid_tui::pipeline::Pipeline;

fn cpus_allowed(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

fn list(cores: &[usize]) -> String {
    // The kernel's format for what we use here: "a" or "a-b" for a run.
    match cores {
        [a] => a.to_string(),
        [a, .., b] if b - a + 1 == cores.len() => format!("{a}-{b}"),
        _ => cores
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(","),
    }
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Shard B on one thread on the first core (the pool is configured once,
/// before the fixture's bake could start rayon with defaults), and the model.
fn setup() -> (Settings, std::path::PathBuf) {
    let mut s = Settings::default();
    s.executive.path = env!("CARGO_BIN_EXE_hybrid-executive").into();
    s.shard_b.cpu_cores = allowed_cores()[0].to_string();
    s.shard_b.threads = 1;
    hybrid_tui::pipeline::configure_cpu_pool(&s.shard_b).expect("pool");
    (s, baked_model(Arch::Llama, "int4_sym"))
}

#[test]
fn each_shard_runs_on_its_own_cores() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let all = allowed_cores();
    let first = all[0];
    let last = *all.last().unwrap();
    let (mut s, dir) = setup();

    // Shard A unpinned: the executive gets the process's cores back, not
    // those of the shard-B thread that started it.
    let p = Pipeline::new(&s, &dir, &mut |_| {}).expect("pipeline");
    assert_eq!(rayon::current_num_threads(), 1);
    let on_pool = rayon::broadcast(|_| allowed_cores());
    assert!(on_pool.iter().all(|c| c == &vec![first]), "{on_pool:?}");
    assert_eq!(
        allowed_cores(),
        vec![first],
        "the pipeline thread is pinned"
    );
    let pid = p.executive().unwrap().pid;
    assert_eq!(cpus_allowed(pid), list(&all));
    p.shutdown();

    // Shard A pinned to the last core.
    s.shard_a.cpu_cores = last.to_string();
    s.shard_a.threads = 1;
    let p = Pipeline::new(&s, &dir, &mut |_| {}).expect("pipeline");
    let pid = p.executive().unwrap().pid;
    assert_eq!(cpus_allowed(pid), last.to_string());
    p.shutdown();

    // A core list the machine does not have is refused by the settings.
    let err = Settings::load(
        &hybrid_tui::config::CliLayer {
            overrides: vec![("shard_a.cpu_cores".into(), "0-99999".into())],
            ..Default::default()
        },
        &hybrid_tui::config::SettingsEnv {
            vars: Default::default(),
            user_config_dir: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("shard_a.cpu_cores"), "{err}");
}

#[test]
fn a_start_removes_segments_of_dead_processes_and_says_so() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = std::path::PathBuf::from(format!("/dev/shm/hybrid-tui.{dead}.00000000deadbeef"));
    std::fs::write(&stale, b"left by a crash").unwrap();
    let (s, dir) = setup();
    let mut events = Vec::new();
    let p = Pipeline::new(&s, &dir, &mut |e| events.push(e)).expect("pipeline");
    assert!(!stale.exists(), "the stale segment is still there");
    let said = events.iter().any(|e| {
        matches!(
            e,
            hybrid_tui::pipeline::Event::Supervisor(
                hybrid_tui::supervisor::SupervisorEvent::StaleSegmentsRemoved { paths }
            ) if paths.iter().any(|x| x.ends_with("deadbeef"))
        )
    });
    assert!(said, "no StaleSegmentsRemoved event naming it");
    p.shutdown();
}
