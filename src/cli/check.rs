//! `hybrid-tui check`.

use anyhow::{Result, bail};

use hybrid_tui::config::Loaded;

use super::args::CheckArgs;

/// `hybrid-tui check`: the live screen on a terminal, JSON or text otherwise.
pub fn cmd_check(loaded: &Loaded, a: CheckArgs, screen: bool) -> Result<()> {
    use hybrid_tui::hw::{Root, checks};
    let root = match &a.sysroot {
        Some(d) if !d.is_dir() => bail!("--sysroot {}: not a directory", d.display()),
        Some(d) => Root::at(d),
        None => Root::live(),
    };
    if screen {
        return Ok(hybrid_tui::tui::run_check_screen(
            &loaded.settings,
            &loaded.profile,
            root,
        )?);
    }
    let report = checks::report(&root, &loaded.settings, &loaded.profile);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", checks::render_text(&report));
    }
    if report.counts.fail > 0 {
        bail!(
            "{} check(s) failed: {}",
            report.counts.fail,
            report
                .checks
                .iter()
                .filter(|c| c.status == checks::Status::Fail)
                .map(|c| c.id)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
