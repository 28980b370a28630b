//! `hybrid-tui models`.

use anyhow::Result;

use hybrid_tui::catalog;
use hybrid_tui::hub::HubOptions;

use super::args::ModelsArgs;

/// `hybrid-tui models`: list or remove cached models.
pub fn cmd_models(a: ModelsArgs) -> Result<()> {
    let hub = HubOptions::from_env();
    if let Some(name) = &a.remove {
        let m = catalog::remove(&hub, name)?;
        println!(
            "removed {} ({}, {:.1} MB) from {}",
            m.name,
            m.kind,
            m.bytes as f64 / 1e6,
            m.path.display()
        );
        return Ok(());
    }
    let list = catalog::list(&hub);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no models cached yet (the first run fetches or makes one)");
        return Ok(());
    }
    println!(
        "{:<44} {:<9} {:>9}  {:<28} {:<20} source",
        "name", "kind", "size", "precision", "date"
    );
    for m in list {
        println!(
            "{:<44} {:<9} {:>7.1}MB  {:<28} {:<20} {}",
            m.name,
            m.kind,
            m.bytes as f64 / 1e6,
            m.precision,
            m.modified,
            m.source
        );
    }
    Ok(())
}
