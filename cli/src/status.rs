//! `status CA`: one screen answering "is this CA well?": its certificate and
//! expiry, readiness, issuance, CRL number and age, the register's counts by
//! state, the responder, and the requests still waiting.

use std::collections::BTreeMap;
use std::io::Write;

use crds::issued_certificate::LABEL_CA;
use crds::{CRLSchedule, CertificateAuthority, CertificateRequest, IssuedCertificate};
use der::DecodePem;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::ListParams;

use crate::{Ctx, Error, READ_HINT, api_error, get_error};

/// A span of time as `3d4h`, `2h5m`, `40s`.
pub fn human(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    let text = if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{}s", s % 60)
    } else {
        format!("{s}s")
    };
    if seconds < 0 {
        format!("-{text}")
    } else {
        text
    }
}

fn since(t: &Time, now: jiff::Timestamp) -> i64 {
    now.as_second() - t.0.as_second()
}

fn cond<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn cond_text(c: Option<&Condition>) -> String {
    match c {
        Some(c) if c.message.is_empty() => format!("{} ({})", c.status, c.reason),
        Some(c) => format!("{} ({}: {})", c.status, c.reason, c.message),
        None => "unknown (no condition yet: is chop-controller running?)".to_owned(),
    }
}

/// Subject of the first certificate in `pem`, RFC 4514 style.
pub fn subject_of(pem: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let first = &pem[..pem.find(END)? + END.len()];
    let cert = x509_cert::Certificate::from_pem(first.as_bytes()).ok()?;
    Some(cert.tbs_certificate.subject.to_string())
}

/// Whether a request is finished: Issued, Denied, Failed or Lapsed is True.
pub fn finished(cr: &CertificateRequest) -> bool {
    cr.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            matches!(c.type_.as_str(), "Issued" | "Denied" | "Failed" | "Lapsed")
                && c.status == "True"
        })
    })
}

/// What a pending request waits for.
pub fn waiting_for(cr: &CertificateRequest) -> String {
    let conditions = cr
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let approved = cond(conditions, "Approved").is_some_and(|c| c.status == "True");
    if !approved {
        return "officer approval (kubectl chop approve)".to_owned();
    }
    if !cr.spec.accepted {
        return "applicant acceptance (kubectl chop accept)".to_owned();
    }
    match cond(conditions, "Issued") {
        Some(c) => format!("issuance ({})", c.reason),
        None => "issuance".to_owned(),
    }
}

/// `status CA`.
pub async fn status(ctx: &Ctx, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let ns = &ctx.namespace;
    let now = jiff::Timestamp::now();
    let ca = Api::<CertificateAuthority>::namespaced(ctx.client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| get_error(e, "CertificateAuthority", name, ns, READ_HINT))?;
    let st = ca.status.clone().unwrap_or_default();
    let mut rows: Vec<(&str, String)> = Vec::new();
    rows.push(("CertificateAuthority", format!("{name} (namespace {ns})")));
    rows.push(("Type", format!("{:?}", ca.spec.ca_type)));
    let subject = st
        .certificate
        .as_deref()
        .and_then(subject_of)
        .unwrap_or_else(|| "(no certificate yet)".to_owned());
    rows.push(("Subject", subject));
    rows.push((
        "Serial",
        st.serial_number.clone().unwrap_or_else(|| "-".to_owned()),
    ));
    rows.push((
        "Not after",
        match &st.not_after {
            Some(t) => format!("{} (in {})", t.0, human(-since(t, now))),
            None => "-".to_owned(),
        },
    ));
    rows.push(("Ready", cond_text(cond(&st.conditions, "Ready"))));
    rows.push(("Issuance", format!("{:?}", ca.spec.issuance)));

    let schedules: Vec<CRLSchedule> = Api::<CRLSchedule>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(e, READ_HINT))?
        .items
        .into_iter()
        .filter(|s| s.spec.ca_ref.name == name)
        .collect();
    if schedules.is_empty() {
        rows.push(("CRL", "no CRLSchedule names this CA".to_owned()));
    }
    for s in &schedules {
        let sname = s.metadata.name.clone().unwrap_or_default();
        let text = match &s.status {
            Some(ss) if ss.crl_number.is_some() => format!(
                "crlschedule/{sname}: number {}, {} entries, age {}, nextUpdate {}",
                ss.crl_number.unwrap_or_default(),
                ss.entries.unwrap_or_default(),
                ss.this_update
                    .as_ref()
                    .map(|t| human(since(t, now)))
                    .unwrap_or_else(|| "-".to_owned()),
                ss.next_update
                    .as_ref()
                    .map(|t| format!("{} (in {})", t.0, human(-since(t, now))))
                    .unwrap_or_else(|| "-".to_owned()),
            ),
            _ => format!("crlschedule/{sname}: no CRL published yet"),
        };
        rows.push(("CRL", text));
    }

    let records = Api::<IssuedCertificate>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{LABEL_CA}={name}")))
        .await
        .map_err(|e| api_error(e, READ_HINT))?
        .items;
    let mut counts: BTreeMap<&str, usize> = ["Valid", "Held", "Revoked", "Expired"]
        .into_iter()
        .map(|k| (k, 0))
        .collect();
    for r in &records {
        let state = match r.state() {
            Ok(s) => s.as_str(),
            Err(_) => "Unknown",
        };
        let state = if state == "Valid" && r.spec.not_after.0 < now {
            "Expired"
        } else {
            state
        };
        *counts.entry(state).or_default() += 1;
    }
    rows.push((
        "Certificates",
        format!(
            "{} issued: {}",
            records.len(),
            counts
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));

    let responder = match &st.responder {
        Some(r) => format!(
            "{}/{} replicas available, certificate {} until {}",
            r.available_replicas.unwrap_or_default(),
            ca.spec.responder.replicas,
            r.certificate_serial_number.as_deref().unwrap_or("-"),
            r.certificate_not_after
                .as_ref()
                .map(|t| format!("{} (in {})", t.0, human(-since(t, now))))
                .unwrap_or_else(|| "-".to_owned()),
        ),
        None => "no responder status yet".to_owned(),
    };
    rows.push(("Responder", responder));
    rows.push((
        "ResponderReady",
        cond_text(cond(&st.conditions, "ResponderReady")),
    ));

    let mut pending: Vec<CertificateRequest> =
        Api::<CertificateRequest>::namespaced(ctx.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error(e, READ_HINT))?
            .items
            .into_iter()
            .filter(|r| r.spec.ca_ref.name == name && !finished(r))
            .collect();
    pending.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    rows.push(("Pending requests", pending.len().to_string()));

    for (k, v) in &rows {
        writeln!(out, "{k:<21} {v}")?;
    }
    if !pending.is_empty() {
        let table: Vec<[String; 4]> = pending
            .iter()
            .map(|r| {
                [
                    r.metadata.name.clone().unwrap_or_default(),
                    serde_json::to_value(r.spec.profile)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    r.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| human(since(t, now)))
                        .unwrap_or_default(),
                    waiting_for(r),
                ]
            })
            .collect();
        let header = ["NAME", "PROFILE", "AGE", "WAITING FOR"];
        let w: Vec<usize> = (0..3)
            .map(|i| {
                table
                    .iter()
                    .map(|row| row[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or_default()
            })
            .collect();
        writeln!(out)?;
        for row in std::iter::once(header.map(str::to_owned)).chain(table) {
            writeln!(
                out,
                "  {:<w0$}  {:<w1$}  {:<w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2]
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn human_spans() {
        assert_eq!(human(40), "40s");
        assert_eq!(human(3 * 60 + 5), "3m5s");
        assert_eq!(human(2 * 3600 + 5 * 60), "2h5m");
        assert_eq!(human(3 * 86_400 + 4 * 3600), "3d4h");
        assert_eq!(human(-90), "-1m30s");
    }
}
