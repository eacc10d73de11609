//! The committed CRD YAML must be exactly what the Rust types generate.

use std::path::Path;

#[test]
fn committed_yaml_matches_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml");
    for (file, crd) in crds::all() {
        let want = crds::to_yaml(&crd).unwrap();
        let have = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| {
            panic!("crds/yaml/{file}: {e}; run `cargo run -p chop-crds --bin crdgen`")
        });
        assert!(
            have == want,
            "crds/yaml/{file} is out of date with crds/src; run `cargo run -p chop-crds --bin crdgen`"
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
