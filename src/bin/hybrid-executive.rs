//! `hybrid-executive`: shard A's process (OpenVINO). For now it answers
//! `--probe`; the control loop over stdin/stdout comes with the rings.

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
    /// Folder holding libopenvino_c.so (otherwise searched; see `hybrid-tui config`).
    #[arg(long, env = "HYBRID_TUI__OPENVINO__RUNTIME_DIR", default_value = "")]
    runtime_dir: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.probe {
        eprintln!("hybrid-executive is started by hybrid-tui; run it by hand only with --probe");
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
