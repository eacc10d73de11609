//! Writes the CRD YAML files into `crds/yaml/` and `manifests/crds/` (the
//! kustomize base's copy, so that `kubectl apply -k manifests/` needs no load
//! restrictor), or only into the directory given as the first argument.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dirs = match std::env::args().nth(1) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![
            crate_dir.join("yaml"),
            crate_dir.join("..").join("manifests").join("crds"),
        ],
    };
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        for (file, crd) in crds::all() {
            std::fs::write(dir.join(file), crds::to_yaml(&crd)?)?;
            println!("wrote {}", dir.join(file).display());
        }
    }
    Ok(())
}
