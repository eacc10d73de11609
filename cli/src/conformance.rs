//! `conformance CA`: the CA's configuration against the CPS limits
//! (DESIGN.md §4). The CRDs already refuse much of what breaks the CPS; this
//! checks what they allow but the CPS does not (a deviation switch such as
//! `allowValidityOver36h`, a development setting such as `keyGeneration:
//! IfMissing`, a limit the schema keeps wide), and says which field to change.
//! [`check`] is pure so every rule is unit-tested.

use std::io::Write;

use crds::certificate_authority::{CaType, KeyGeneration};
use crds::common::KeyAlgorithm;
use crds::{CRLSchedule, CertificateAuthority};
use kube::Api;
use kube::api::ListParams;

use crate::duration::{hours, parse_seconds};
use crate::{Ctx, Error, get_error};

/// The policy OID every certificate must carry (CPS §7.1.6).
pub const POLICY_OID: &str = "2.16.886.101.0.3.3";

const HOUR: f64 = 3600.0;

/// One requirement and whether the configuration meets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// CPS section, e.g. `§4.9.7`.
    pub section: &'static str,
    /// The requirement, in words.
    pub requirement: String,
    /// Whether it is met.
    pub met: bool,
    /// What the configuration says.
    pub detail: String,
    /// The field to change (and to what), when not met.
    pub fix: Option<String>,
}

fn finding(
    section: &'static str,
    requirement: &str,
    met: bool,
    detail: String,
    fix: Option<String>,
) -> Finding {
    Finding {
        section,
        requirement: requirement.to_owned(),
        met,
        detail,
        fix: if met { None } else { fix },
    }
}

/// A duration field against a maximum; `None` uses the default.
fn duration_at_most(
    section: &'static str,
    requirement: &str,
    field: &str,
    value: Option<&str>,
    default: &str,
    max_hours: f64,
) -> Finding {
    let text = value.unwrap_or(default);
    match parse_seconds(text) {
        Some(s) => finding(
            section,
            requirement,
            s <= max_hours * HOUR,
            format!(
                "{field} = {text}{}",
                if value.is_none() { " (default)" } else { "" }
            ),
            Some(format!(
                "set {field} to at most {}",
                hours(max_hours * HOUR)
            )),
        ),
        None => finding(
            section,
            requirement,
            false,
            format!("{field} = {text:?} is not a duration"),
            Some(format!(
                "set {field} to a duration such as {}",
                hours(max_hours * HOUR)
            )),
        ),
    }
}

/// Check a CA and the CRLSchedules naming it.
pub fn check(ca: &CertificateAuthority, schedules: &[CRLSchedule]) -> Vec<Finding> {
    let spec = &ca.spec;
    let mut f = Vec::new();

    let key = &spec.hsm.key;
    let rsa = key.algorithm == KeyAlgorithm::Rsa;
    f.push(finding(
        "§6.1.5",
        "CA key is RSA of at least 2048 bits",
        rsa && key.size >= 2048,
        format!(
            "spec.hsm.key = {} {}",
            if rsa { "RSA" } else { "ECDSA" },
            key.size
        ),
        Some("spec.hsm.key: {algorithm: RSA, size: 2048} (a new key means a new CertificateAuthority)".to_owned()),
    ));
    f.push(finding(
        "§6.1.1",
        "CA key generated in the HSM under multi-person control (KeyCeremony)",
        spec.hsm.key_generation == KeyGeneration::Never,
        format!("spec.hsm.keyGeneration = {:?}", spec.hsm.key_generation),
        Some("spec.hsm.keyGeneration: Never with spec.hsm.keyFrom naming a Generate KeyCeremony (IfMissing is for development: no witnesses)".to_owned()),
    ));
    let min_rsa = spec.profiles.min_rsa_bits.unwrap_or(2048);
    let min_ec = spec.profiles.min_ec_bits.unwrap_or(521);
    f.push(finding(
        "§6.1.5",
        "subscriber keys RSA ≥ 2048 or ECC ≥ 521 bits",
        min_rsa >= 2048 && min_ec >= 521,
        format!("spec.profiles.minRsaBits = {min_rsa}, minEcBits = {min_ec}"),
        Some("spec.profiles.minRsaBits ≥ 2048 and spec.profiles.minEcBits: 521".to_owned()),
    ));
    let (max_ca, kind) = match spec.ca_type {
        CaType::Root => (175_200.0, "root CA certificate at most 20 years"),
        CaType::Subordinate => (87_600.0, "subordinate CA certificate at most 10 years"),
    };
    let default_ca = match spec.ca_type {
        CaType::Root => "175200h",
        CaType::Subordinate => "87600h",
    };
    f.push(duration_at_most(
        "§6.3.2",
        kind,
        "spec.validity",
        spec.validity.as_deref(),
        default_ca,
        max_ca,
    ));
    f.push(duration_at_most(
        "§6.3.2.2",
        "signature and encryption certificates at most 5 years",
        "spec.profiles.subscriberValidity",
        spec.profiles.subscriber_validity.as_deref(),
        "43800h",
        43_800.0,
    ));
    f.push(duration_at_most(
        "§6.3.2.2",
        "mobile certificates at most 1 year",
        "spec.profiles.mobileValidity",
        spec.profiles.mobile_validity.as_deref(),
        "8760h",
        8_760.0,
    ));
    f.push(duration_at_most(
        "§6.3.2.2",
        "a renewal extends notAfter by at most 3 years",
        "spec.profiles.renewalExtension",
        spec.profiles.renewal_extension.as_deref(),
        "26304h",
        26_304.0,
    ));
    f.push(finding(
        "§4.4",
        "an unaccepted request lapses after at most 90 days",
        spec.acceptance_days <= 90,
        format!("spec.acceptanceDays = {}", spec.acceptance_days),
        Some("spec.acceptanceDays: 90".to_owned()),
    ));
    f.push(duration_at_most(
        "§4.9.9",
        "delegated OCSP responder certificate short-lived (at most 7 days)",
        "spec.profiles.responderValidity",
        spec.profiles.responder_validity.as_deref(),
        "168h",
        168.0,
    ));
    let km = &spec.ceremony_quorum.key_management;
    f.push(finding(
        "§5.2.2",
        "key generation, backup, restore, destruction: ≥ 2 administrators + 1 auditor + 1 controller",
        km.administrators >= 2 && km.auditors >= 1 && km.controllers >= 1,
        format!(
            "spec.ceremonyQuorum.keyManagement = {} administrators, {} auditors, {} controllers",
            km.administrators, km.auditors, km.controllers
        ),
        Some("spec.ceremonyQuorum.keyManagement: {administrators: 2, auditors: 1, controllers: 1}".to_owned()),
    ));
    let act = &spec.ceremony_quorum.activation;
    f.push(finding(
        "§5.2.2",
        "activation, deactivation: ≥ 2 officers + 1 controller",
        act.officers >= 2 && act.controllers >= 1,
        format!(
            "spec.ceremonyQuorum.activation = {} officers, {} controllers",
            act.officers, act.controllers
        ),
        Some("spec.ceremonyQuorum.activation: {officers: 2, controllers: 1}".to_owned()),
    ));
    f.push(finding(
        "§7.1.6",
        "certificates carry policy 2.16.886.101.0.3.3 (class 3 assurance)",
        spec.policy_oids.iter().any(|o| o == POLICY_OID),
        format!("spec.policyOIDs = [{}]", spec.policy_oids.join(", ")),
        Some(format!("add {POLICY_OID} to spec.policyOIDs")),
    ));

    if schedules.is_empty() {
        f.push(finding(
            "§4.9.7",
            "a CRL at least every 24 hours, valid at most 36 hours",
            false,
            "no CRLSchedule names this CA".to_owned(),
            Some("create a CRLSchedule with spec.caRef.name set to this CA (defaults: interval 24h, validity 36h)".to_owned()),
        ));
    }
    for s in schedules {
        let name = s.metadata.name.clone().unwrap_or_default();
        let interval = duration_at_most(
            "§4.9.7",
            "a CRL at least every 24 hours",
            &format!("crlschedule/{name} spec.interval"),
            Some(&s.spec.interval),
            "24h",
            24.0,
        );
        let interval_ok = interval.met;
        f.push(interval);
        f.push(duration_at_most(
            "§4.9.7",
            "CRL validity (nextUpdate − thisUpdate) at most 36 hours",
            &format!("crlschedule/{name} spec.validity"),
            Some(&s.spec.validity),
            "36h",
            36.0,
        ));
        f.push(finding(
            "§4.9.7",
            "a revocation is on a CRL within 24 hours",
            s.spec.reissue_on_change || interval_ok,
            format!(
                "crlschedule/{name} spec.reissueOnChange = {}, interval {}",
                s.spec.reissue_on_change, s.spec.interval
            ),
            Some(format!("set crlschedule/{name} spec.reissueOnChange: true")),
        ));
    }
    f
}

/// Print the findings as a table; the number not met.
pub fn render(findings: &[Finding], out: &mut dyn Write) -> Result<usize, Error> {
    let mut not_met = 0;
    for x in findings {
        let verdict = if x.met { "met" } else { "NOT MET" };
        if !x.met {
            not_met += 1;
        }
        writeln!(
            out,
            "{:<9} {:<8} {}\n{:<19}{}",
            x.section, verdict, x.requirement, "", x.detail
        )?;
        if let Some(fix) = &x.fix {
            writeln!(out, "{:<19}change: {fix}", "")?;
        }
    }
    writeln!(
        out,
        "\n{} of {} requirements met.",
        findings.len() - not_met,
        findings.len()
    )?;
    Ok(not_met)
}

/// `conformance CA`.
pub async fn conformance(ctx: &Ctx, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let cas: Api<CertificateAuthority> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let ca = cas.get(name).await.map_err(|e| {
        get_error(
            e,
            "CertificateAuthority",
            name,
            &ctx.namespace,
            crate::READ_HINT,
        )
    })?;
    let schedules: Api<CRLSchedule> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let schedules: Vec<CRLSchedule> = schedules
        .list(&ListParams::default())
        .await
        .map_err(|e| crate::api_error(e, crate::READ_HINT))?
        .items
        .into_iter()
        .filter(|s| s.spec.ca_ref.name == name)
        .collect();
    writeln!(
        out,
        "CPS conformance of certificateauthority/{name} (namespace {})\n",
        ctx.namespace
    )?;
    let not_met = render(&check(&ca, &schedules), out)?;
    if not_met > 0 {
        return Err(Error::NotConforming(not_met));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{Value, json};

    fn ca(extra: Value) -> CertificateAuthority {
        let mut spec = json!({
            "type": "Root",
            "subject": {"country": "TW", "commonName": "root"},
            "hsm": {"tokenLabel": "t", "keyLabel": "k", "pinSecretRef": {"name": "p", "key": "pin"},
                    "keyGeneration": "Never", "keyFrom": {"ceremony": "gen"}}
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(
            json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateAuthority",
            "metadata": {"name": "root"}, "spec": spec}),
        )
        .unwrap()
    }

    fn schedule(spec: Value) -> CRLSchedule {
        let mut s = json!({"caRef": {"name": "root"}});
        for (k, v) in spec.as_object().unwrap() {
            s[k] = v.clone();
        }
        serde_json::from_value(
            json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule",
            "metadata": {"name": "root"}, "spec": s}),
        )
        .unwrap()
    }

    fn not_met(f: &[Finding]) -> Vec<String> {
        f.iter()
            .filter(|x| !x.met)
            .map(|x| format!("{} {}", x.section, x.detail))
            .collect()
    }

    #[test]
    fn defaults_with_a_ceremony_key_and_a_default_schedule_conform() {
        let f = check(&ca(json!({})), &[schedule(json!({}))]);
        assert!(not_met(&f).is_empty(), "{:?}", not_met(&f));
        assert!(f.iter().all(|x| x.fix.is_none()));
    }

    #[test]
    fn each_deviation_the_crds_allow_is_reported_with_its_field() {
        let f = check(
            &ca(json!({
                "validity": "200000h",
                "acceptanceDays": 120,
                "policyOIDs": ["1.2.3.4"],
                "hsm": {"tokenLabel": "t", "keyLabel": "k", "pinSecretRef": {"name": "p", "key": "pin"},
                        "keyGeneration": "IfMissing", "key": {"algorithm": "ECDSA", "size": 384}},
                "profiles": {"subscriberValidity": "87600h", "mobileValidity": "17520h",
                             "responderValidity": "720h", "minEcBits": 384, "renewalExtension": "43800h"}
            })),
            &[schedule(
                json!({"interval": "48h", "validity": "72h", "allowValidityOver36h": true,
                               "reissueOnChange": false}),
            )],
        );
        let bad = not_met(&f);
        for needle in [
            "spec.hsm.key = ECDSA 384",
            "keyGeneration = IfMissing",
            "minEcBits = 384",
            "spec.validity = 200000h",
            "subscriberValidity = 87600h",
            "mobileValidity = 17520h",
            "renewalExtension = 43800h",
            "acceptanceDays = 120",
            "responderValidity = 720h",
            "policyOIDs = [1.2.3.4]",
            "spec.interval = 48h",
            "spec.validity = 72h",
            "reissueOnChange = false",
        ] {
            assert!(
                bad.iter().any(|b| b.contains(needle)),
                "{needle} not in {bad:?}"
            );
        }
        assert_eq!(bad.len(), 13, "{bad:?}");
        assert!(f.iter().filter(|x| !x.met).all(|x| x.fix.is_some()));
    }

    #[test]
    fn subordinate_limit_is_ten_years_and_missing_schedule_is_not_met() {
        let mut c = ca(json!({"validity": "100000h"}));
        c.spec.ca_type = CaType::Subordinate;
        let bad = not_met(&check(&c, &[]));
        assert!(
            bad.iter().any(|b| b.contains("spec.validity = 100000h")),
            "{bad:?}"
        );
        assert!(bad.iter().any(|b| b.contains("no CRLSchedule")), "{bad:?}");
        let ok = not_met(&check(
            &ca(json!({"validity": "100000h"})),
            &[schedule(json!({}))],
        ));
        assert!(ok.is_empty(), "root may have 100000h: {ok:?}");
    }

    #[test]
    fn lowered_quorums_are_reported() {
        let mut c = ca(json!({}));
        c.spec.ceremony_quorum.activation.officers = 1;
        c.spec.ceremony_quorum.key_management.auditors = 0;
        let bad = not_met(&check(&c, &[schedule(json!({}))]));
        assert_eq!(bad.len(), 2, "{bad:?}");
    }

    #[test]
    fn render_counts_and_names_the_fix() {
        let f = check(&ca(json!({"acceptanceDays": 91})), &[schedule(json!({}))]);
        let mut out = Vec::new();
        assert_eq!(render(&f, &mut out).unwrap(), 1);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("NOT MET  an unaccepted request lapses"),
            "{text}"
        );
        assert!(text.contains("change: spec.acceptanceDays: 90"), "{text}");
        assert!(text.contains(&format!("{} of {} requirements met", f.len() - 1, f.len())));
    }
}
