//! `hybrid-tui`: the command-line front end. Parses the arguments and
//! hands each command to its handler in `cli/`.

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = hybrid_tui::supervisor::install_signal_handlers() {
        eprintln!("warning: cannot handle termination signals: {e}");
    }
    // Written, not eprintln!: stderr may be a closed terminal by now.
    use std::io::Write;
    let result = run(cli);
    // A signal stopped it (the workbench quits cleanly on one too): 128 + the
    // signal, as shells report it.
    if let Some(code) = hybrid_tui::supervisor::signal_exit_code() {
        let _ = writeln!(
            std::io::stderr(),
            "interrupted: the executive was stopped and its shared memory removed"
        );
        return ExitCode::from(code);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {}", chain_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: many of the library's errors
/// already end in their cause's text ("{path}: {source}").
fn chain_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

fn run(cli: Cli) -> Result<()> {
    // make-test-model and bake need no settings; everything else does.
    match cli.command {
        Some(Command::MakeTestModel(a)) => return cli::bake::cmd_make_test_model(a),
        Some(Command::Bake(a)) => return cli::bake::cmd_bake(a),
        _ => {}
    }
    let bench = matches!(cli.command, Some(Command::Bench(_)));
    let loaded = cli::load_settings(&cli.global, bench)?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let check_screen = matches!(&cli.command, Some(Command::Check(a)) if !a.json && !a.text && tty);
    let bench_screen = matches!(&cli.command, Some(Command::Bench(a)) if a.output.is_none() && a.compare.is_none() && !a.list && tty);
    let workbench = (cli.command.is_none() && tty) || check_screen || bench_screen;
    // The workbench logs to its file and its log pane itself.
    if !workbench {
        cli::init_logging(&loaded.settings);
    }
    match cli.command {
        Some(Command::Config { json }) => {
            if json {
                let v = serde_json::json!({
                    "profile": loaded.profile,
                    "settings": loaded.settings,
                    "origin": loaded.provenance,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", loaded.render());
            }
            Ok(())
        }
        Some(Command::Generate(a)) => cli::generate::cmd_generate(&loaded, a),
        Some(Command::Check(a)) => cli::check::cmd_check(&loaded, a, check_screen),
        Some(Command::Models(a)) => cli::models::cmd_models(a),
        Some(Command::Bench(a)) => cli::bench::cmd_bench(&loaded, &cli.global, a, bench_screen),
        Some(Command::Serve(a)) => cli::serve::cmd_serve(&loaded, a),
        Some(Command::Index(a)) => cli::index::cmd_index(&loaded, a),
        Some(Command::Search(a)) => cli::index::cmd_search(&loaded, a),
        None if workbench => cli::start::cmd_workbench(&loaded),
        None => cli::start::cmd_first_run(&loaded),
        Some(_) => Ok(()),
    }
}
