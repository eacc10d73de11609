//! The committed CRD YAML must be exactly what the Rust types generate.

use std::path::Path;

#[test]
fn committed_yaml_matches_the_types() {
    // crds/yaml/ for tools and tests; manifests/crds/ for the kustomize base.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (shown, dir) in [
        ("crds/yaml", root.join("yaml")),
        (
            "manifests/crds",
            root.join("..").join("manifests").join("crds"),
        ),
    ] {
        for (file, crd) in crds::all() {
            let want = crds::to_yaml(&crd).unwrap();
            let have = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| {
                panic!("{shown}/{file}: {e}; run `cargo run -p chop-crds --bin crdgen`")
            });
            assert!(
                have == want,
                "{shown}/{file} is out of date with crds/src; run `cargo run -p chop-crds --bin crdgen`"
            );
        }
        // No stale CRD left behind in either copy.
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        on_disk.sort();
        let mut generated: Vec<String> = crds::all()
            .into_iter()
            .map(|(f, _)| f.to_string())
            .collect();
        generated.sort();
        assert_eq!(
            on_disk, generated,
            "{shown}: files that crdgen does not write"
        );
    }
}

#[test]
fn every_field_has_a_description() {
    // `kubectl explain` shows these; an undocumented field is a defect.
    fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (k, sub) in props {
                let p = format!("{path}.{k}");
                let skip = p.ends_with(".metadata")
                    || p.contains(".conditions")
                    || p.contains(".resources.");
                if !skip && sub.get("description").is_none() {
                    missing.push(p.clone());
                }
                walk(&p, sub, missing);
            }
        }
        if let Some(items) = v.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for (file, crd) in crds::all() {
        for version in &crd.spec.versions {
            let schema = serde_json::to_value(
                version
                    .schema
                    .as_ref()
                    .unwrap()
                    .open_api_v3_schema
                    .as_ref()
                    .unwrap(),
            )
            .unwrap();
            for top in ["spec", "status"] {
                walk(
                    &format!("{file}:{top}"),
                    &schema["properties"][top],
                    &mut missing,
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields without a doc comment: {missing:#?}"
    );
}

#[test]
fn schemas_use_only_formats_kubernetes_knows() {
    // kube-apiserver warns on unknown formats (e.g. schemars' "uint32") at every apply.
    let known = [
        "int32",
        "int64",
        "date-time",
        "byte",
        "double",
        "float",
        "date",
        "int-or-string",
    ];
    for (file, crd) in crds::all() {
        let text = serde_json::to_string(&crd).unwrap();
        for (i, _) in text.match_indices("\"format\":\"") {
            let rest = &text[i + 10..];
            let format = &rest[..rest.find('"').unwrap()];
            assert!(known.contains(&format), "{file}: format {format:?}");
        }
    }
}
