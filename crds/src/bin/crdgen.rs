//! Writes the CRD YAML files into `crds/yaml/` (or the directory given as the
//! first argument).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("yaml"));
    std::fs::create_dir_all(&dir)?;
    for (file, crd) in crds::all() {
        std::fs::write(dir.join(file), crds::to_yaml(&crd)?)?;
        println!("wrote {}", dir.join(file).display());
    }
    Ok(())
}
