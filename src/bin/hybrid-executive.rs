//! `hybrid-executive`: shard A's process (OpenVINO). hybrid-tui starts it
//! with `--serve` and talks to it over stdin/stdout (control) and a
//! shared-memory segment (data); `--probe` describes the runtime.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "hybrid-executive",
    version,
    about = "Shard A of hybrid-tui, on OpenVINO"
)]
struct Cli {
    /// Print the OpenVINO runtime's version and every available device with its main properties, as JSON.
    #[arg(long)]
    probe: bool,
    /// Serve shard A for hybrid-tui (JSON lines on stdin/stdout; started by hybrid-tui, not by hand).
    #[arg(long, conflicts_with = "probe")]
    serve: bool,
    /// With --serve: exit at once if this is not our parent (it died before we started).
    #[arg(long, requires = "serve")]
    parent_pid: Option<u32>,
    /// Folder holding libopenvino_c.so (otherwise searched; see `hybrid-tui config`).
    #[arg(long, env = "HYBRID_TUI__OPENVINO__RUNTIME_DIR", default_value = "")]
    runtime_dir: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.serve {
        // Our stderr is the parent's log of us; stdout carries the protocol.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("HYBRID_EXECUTIVE_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .init();
        let code = hybrid_tui::executive::serve::serve(cli.parent_pid);
        return ExitCode::from(code as u8);
    }
    if !cli.probe {
        eprintln!(
            "hybrid-executive is started by hybrid-tui (--serve); run it by hand only with --probe"
        );
        return ExitCode::from(2);
    }
    match hybrid_tui::executive::probe::probe(&cli.runtime_dir) {
        Ok(report) => match serde_json::to_string_pretty(&report) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
