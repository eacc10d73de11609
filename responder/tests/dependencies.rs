//! The responder image carries no controller code (issue 11): chop-responder
//! shares only `chop-register` (CRL publication format, partitioning), `ca` and
//! `chop-crds` with the controller, never the `chop-controller` crate itself.

#[test]
fn the_responder_does_not_depend_on_the_controller_crate() {
    let manifest = include_str!("../Cargo.toml");
    let deps: Vec<&str> = manifest
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    assert!(
        deps.contains(&"chop-register"),
        "the responder reads CRL publications through chop-register: {deps:?}"
    );
    assert!(
        !deps
            .iter()
            .any(|d| *d == "chop-controller" || *d == "controller"),
        "chop-responder must not depend on chop-controller (move shared code to register/): {deps:?}"
    );
}
