//! Passes the burn version from Cargo.lock to the code (bench records name it).

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut version = "unknown".to_string();
    let mut in_burn = false;
    for line in lock.lines() {
        if line.starts_with("[[package]]") {
            in_burn = false;
        } else if line == "name = \"burn\"" {
            in_burn = true;
        } else if in_burn && let Some(v) = line.strip_prefix("version = ") {
            version = v.trim_matches('"').to_string();
            break;
        }
    }
    println!("cargo:rustc-env=HYBRID_BURN_VERSION={version}");
}
