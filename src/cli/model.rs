//! The model a command runs, through the catalog, and how its steps and downloads are shown.

use std::path::PathBuf;

use anyhow::Result;

use hybrid_tui::catalog::{self, CatalogEvent, Fallback};
use hybrid_tui::config::Settings;

/// Shows what the catalog does: steps as lines, downloads as one progress
/// bar per file on stderr when it is a terminal.
pub struct CatalogView {
    bars: indicatif::MultiProgress,
    style: indicatif::ProgressStyle,
    files: std::collections::HashMap<String, indicatif::ProgressBar>,
}

impl CatalogView {
    pub fn new() -> CatalogView {
        let bars = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            indicatif::MultiProgress::new()
        } else {
            indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
        };
        let style = indicatif::ProgressStyle::with_template(
            "{msg:40} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        CatalogView {
            bars,
            style,
            files: std::collections::HashMap::new(),
        }
    }

    pub fn show(&mut self, e: CatalogEvent, line: &mut dyn FnMut(&str)) {
        match e {
            CatalogEvent::Step(s) => line(&s),
            CatalogEvent::Fallback(lines) => lines.iter().for_each(|l| line(l)),
            CatalogEvent::Download(p) => {
                let bar = self.files.entry(p.file.clone()).or_insert_with(|| {
                    let b = self.bars.add(indicatif::ProgressBar::new(p.total));
                    b.set_style(self.style.clone());
                    b.set_message(p.file.clone());
                    b
                });
                bar.set_length(p.total);
                bar.set_position(p.done);
                if p.total > 0 && p.done >= p.total {
                    bar.finish();
                }
            }
        }
    }
}

/// The baked model to run: `--model` when given (its errors are the
/// answer), else `model.source` (the demo model stands in for a Hub model
/// that cannot be had).
pub fn model_for(s: &Settings, model: Option<&str>) -> Result<PathBuf> {
    let (source, fallback) = match model {
        Some(m) => (m, Fallback::None),
        None => (s.model.source.as_str(), Fallback::Demo),
    };
    let mut view = CatalogView::new();
    Ok(catalog::resolve(source, fallback, &mut |e| {
        view.show(e, &mut |l| eprintln!("{l}"))
    })?)
}
