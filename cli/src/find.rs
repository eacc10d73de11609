//! `find`: a certificate in the CA's register, by serial, subscriber, request
//! name or key fingerprint. The register (IssuedCertificates) outlives the
//! CertificateRequests, which chop-controller deletes `--request-retention`
//! after they finished (docs/operator.md, "Finding a certificate"), so this
//! is the path to a certificate once its request is gone. Each lookup is one
//! GET by name or one LIST by label: records are named `<ca>-<serial lower
//! hex>` and labelled `chop.dev/subscriber-id`, `chop.dev/key-fingerprint`
//! and `chop.dev/request`.
//!
//! The rows hold what the register holds: CA, serial, state, notAfter,
//! request, the CA-assigned subscriber identifier and the profile; never the
//! subject's name (CPS §9.4: `kubectl get issued -o wide` shows it to those
//! who may read it).

use std::io::Write;

use crds::issued_certificate::{
    LABEL_CA, LABEL_KEY_FINGERPRINT, LABEL_REQUEST, LABEL_SUBSCRIBER_ID, request_label_value,
};
use crds::{CertificateAuthority, CertificateRequest, IssuedCertificate};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::{Ctx, Error, READ_HINT, api_error};

/// How to find the certificate (exactly one of serial, subscriber, request,
/// key fingerprint).
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("by").required(true).args(["serial", "subscriber", "request", "key_fingerprint"])))]
pub struct FindArgs {
    /// Serial number in hex (any case, colons allowed, as `openssl x509 -serial` prints it).
    #[arg(long)]
    pub serial: Option<String>,
    /// The CA-assigned subscriber identifier (the subject's serialNumber; label chop.dev/subscriber-id).
    #[arg(long)]
    pub subscriber: Option<String>,
    /// The name of the CertificateRequest it was issued for (also after the request was deleted).
    #[arg(long)]
    pub request: Option<String>,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo, hex (every certificate of that key pair).
    #[arg(long)]
    pub key_fingerprint: Option<String>,
    /// Only the register of this CertificateAuthority (default: every CA of the namespace).
    #[arg(long)]
    pub ca: Option<String>,
}

/// A serial as records name it: lower-case hex of the minimal big-endian
/// octets (leading zero octets dropped), or `None` if it is not hex.
pub fn normalize_serial(serial: &str) -> Option<String> {
    let clean: String = serial
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if clean.is_empty() || clean.len() > 42 || !clean.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut even = if clean.len() % 2 == 1 {
        format!("0{clean}")
    } else {
        clean
    };
    while even.len() > 2 && even.starts_with("00") {
        even.drain(..2);
    }
    Some(even)
}

/// Whether `v` is a valid label value (what a selector may carry).
fn label_value(flag: &str, v: &str) -> Result<(), Error> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{flag} {v:?} cannot be in the register: at most 63 letters, digits, '-', '_' or '.'"
        )))
    }
}

async fn list(
    api: &Api<IssuedCertificate>,
    selector: &str,
) -> Result<Vec<IssuedCertificate>, Error> {
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| api_error(e, READ_HINT))?
        .items)
}

/// The records that match `args` in the namespace, sorted by CA and serial.
pub async fn records(ctx: &Ctx, args: &FindArgs) -> Result<Vec<IssuedCertificate>, Error> {
    let api: Api<IssuedCertificate> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let ca_sel = args
        .ca
        .as_ref()
        .map(|ca| format!("{LABEL_CA}={ca}"))
        .unwrap_or_else(|| LABEL_CA.to_owned());
    let mut found = if let Some(serial) = &args.serial {
        let hex = normalize_serial(serial).ok_or_else(|| {
            Error::Invalid(format!(
                "--serial {serial:?} is not a hexadecimal serial number (1 to 40 hex digits)"
            ))
        })?;
        let cas = match &args.ca {
            Some(ca) => vec![ca.clone()],
            None => Api::<CertificateAuthority>::namespaced(ctx.client.clone(), &ctx.namespace)
                .list(&ListParams::default())
                .await
                .map_err(|e| api_error(e, READ_HINT))?
                .items
                .iter()
                .map(ResourceExt::name_any)
                .collect(),
        };
        let mut out = Vec::new();
        for ca in cas {
            if let Some(r) = api
                .get_opt(&format!("{ca}-{hex}"))
                .await
                .map_err(|e| api_error(e, READ_HINT))?
                .filter(|r| r.spec.ca_ref.name == ca)
            {
                out.push(r);
            }
        }
        out
    } else if let Some(id) = &args.subscriber {
        label_value("--subscriber", id)?;
        list(&api, &format!("{ca_sel},{LABEL_SUBSCRIBER_ID}={id}")).await?
    } else if let Some(fp) = &args.key_fingerprint {
        let fp: String = fp
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        if fp.len() < 63 || fp.len() > 64 || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "--key-fingerprint {fp:?} is not a SHA-256 in hex (64 hex digits; `openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum`)"
            )));
        }
        let label: String = fp.chars().take(63).collect();
        let mut rs = list(&api, &format!("{ca_sel},{LABEL_KEY_FINGERPRINT}={label}")).await?;
        rs.retain(|r| r.spec.key_fingerprint.starts_with(&fp));
        rs
    } else if let Some(name) = &args.request {
        let mut rs = list(
            &api,
            &format!("{ca_sel},{LABEL_REQUEST}={}", request_label_value(name)),
        )
        .await?;
        rs.retain(|r| r.spec.request_ref.as_ref().is_some_and(|q| &q.name == name));
        // A request that still exists names its serial: found even in a
        // register written before records carried the request label.
        let cr = Api::<CertificateRequest>::namespaced(ctx.client.clone(), &ctx.namespace)
            .get_opt(name)
            .await
            .map_err(|e| api_error(e, READ_HINT))?;
        let serial = cr.as_ref().and_then(|cr| {
            let st = cr.status.as_ref()?;
            st.certificate.as_ref()?;
            Some((cr.spec.ca_ref.name.clone(), st.serial_number.clone()?))
        });
        if let Some((ca, serial)) = serial
            && args.ca.as_ref().is_none_or(|c| *c == ca)
            && let Some(hex) = normalize_serial(&serial)
            && !rs.iter().any(|r| r.name_any() == format!("{ca}-{hex}"))
            && let Some(r) = api
                .get_opt(&format!("{ca}-{hex}"))
                .await
                .map_err(|e| api_error(e, READ_HINT))?
        {
            rs.push(r);
        }
        rs
    } else {
        Vec::new()
    };
    found.sort_by(|a, b| {
        (&a.spec.ca_ref.name, &a.spec.serial_number)
            .cmp(&(&b.spec.ca_ref.name, &b.spec.serial_number))
    });
    Ok(found)
}

/// The certificate's state as the register says: the `chop.dev/status`
/// label (written with `status.state`), `Valid` when absent.
fn state(r: &IssuedCertificate) -> String {
    r.labels()
        .get("chop.dev/status")
        .cloned()
        .unwrap_or_else(|| "Valid".to_owned())
}

/// `kubectl chop find`: print the matching rows of the register.
pub async fn find(ctx: &Ctx, args: &FindArgs, out: &mut dyn Write) -> Result<(), Error> {
    let rows = records(ctx, args).await?;
    if rows.is_empty() {
        let what = match (&args.serial, &args.subscriber, &args.request) {
            (Some(s), ..) => format!("serial {s}"),
            (_, Some(s), _) => format!("subscriber {s}"),
            (.., Some(r)) => format!("request {r}"),
            _ => format!(
                "key fingerprint {}",
                args.key_fingerprint.as_deref().unwrap_or_default()
            ),
        };
        return Err(Error::NotFound {
            kind: "IssuedCertificate",
            name: what,
            namespace: ctx.namespace.clone(),
            hint: "no certificate of the register matches; check -n NAMESPACE and --ca. A request not issued \
                   yet has no certificate: `kubectl get certificaterequests` shows it while it waits"
                .to_owned(),
        });
    }
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.spec.ca_ref.name.clone(),
                r.spec.serial_number.clone(),
                state(r),
                r.spec.not_after.0.to_string(),
                r.spec
                    .request_ref
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |q| q.name.clone()),
                r.spec
                    .subscriber_id
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
                r.spec.profile.clone(),
                r.name_any(),
            ]
        })
        .collect();
    let header = [
        "CA",
        "SERIAL",
        "STATUS",
        "NOT-AFTER",
        "REQUEST",
        "SUBSCRIBER",
        "PROFILE",
        "RECORD",
    ];
    let mut widths = header.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &table {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn serials_are_normalized_as_records_name_them() {
        assert_eq!(normalize_serial("0A:1B").as_deref(), Some("0a1b"));
        assert_eq!(normalize_serial("A1B").as_deref(), Some("0a1b"));
        assert_eq!(normalize_serial("00FF").as_deref(), Some("ff"));
        assert_eq!(normalize_serial("00").as_deref(), Some("00"));
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(""), None);
    }
}
