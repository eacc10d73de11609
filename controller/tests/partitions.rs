//! End to end: partitioned CRLs against a real kube-apiserver, the real
//! `chop-controller` binary and SoftHSM2; certificates and CRLs checked with
//! the `openssl` CLI.
//!
//! - `certificates_name_their_partition_and_its_crl_lists_them`: a CA whose
//!   CRL URL is `.../crl/root.crl` and a CRLSchedule with `partitions: 2`
//!   created before issuing → the full CRL and two partition CRLs (publications
//!   `moica-0`, `moica-1`) are published with one CRL number, Ready=True. Each
//!   issued certificate's only CRL distribution point is
//!   `.../crl/root-<serial mod 2>.crl` and its record says `crlPartition`. A
//!   revoked certificate is on its partition's CRL (critical
//!   issuingDistributionPoint naming that URL) and on the full CRL, not on the
//!   other partition's; `openssl verify -crl_check` says revoked with its
//!   partition CRL, verifies a certificate of the other partition with that
//!   one's CRL, and refuses the wrong partition's ("different CRL scope").
//!   CRL numbers increase, the same for every CRL of a round.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use controller::publish;
use crds::CRLSchedule;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

mod common;
use common::*;

const BASE: &str = "http://repository.moica.example.tw/crl/root";

/// Wait until schedule `moica` has published CRL number ≥ `min` (full and
/// partitions); its status.
async fn published(h: &Harness, min: i64) -> crds::CRLScheduleStatus {
    let api = h.api::<CRLSchedule>();
    h.wait(&format!("CRL >= {min} and its partitions"), 60, || {
        let api = api.clone();
        async move {
            let st = api.get("moica").await.ok()?.status?;
            (st.crl_number? >= min).then_some(())?;
            published_with_partitions(st)
        }
    })
    .await
}

/// `st` if its last round published the full CRL and both partition CRLs.
fn published_with_partitions(st: crds::CRLScheduleStatus) -> Option<crds::CRLScheduleStatus> {
    let ok = st
        .conditions
        .iter()
        .any(|c| c.type_ == "Published" && c.status == "True");
    (ok && st.partitions_published == Some(2)).then_some(st)
}

/// The DER of the CRL published as `publication`, and its number.
async fn crl(h: &Harness, publication: &str) -> (Vec<u8>, u64) {
    let der = publish::read_crl(&h.env.admin(), h.ns(), publication)
        .await
        .unwrap();
    let number = ca::crl::parse_crl(&der).unwrap().number.unwrap();
    (der, number)
}

#[tokio::test]
async fn certificates_name_their_partition_and_its_crl_lists_them() {
    let mut h = Harness::new().await;
    h.start(false);
    let ca = h.create_ca().await;
    let root = h.write(
        "root.pem",
        ca.status.as_ref().unwrap().certificate.as_deref().unwrap(),
    );
    create::<CRLSchedule>(
        &h,
        json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule",
               "metadata": {"name": "moica"},
               "spec": {"caRef": {"name": "root"}, "interval": "1h", "validity": "36h",
                        "overlap": "12h", "partitions": 2}}),
    )
    .await;
    let st = published(&h, 1).await;
    let first = st.crl_number.unwrap();
    let api = h.api::<CRLSchedule>();
    let s = api.get("moica").await.unwrap();
    let ready = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Scheduled")
    );
    for n in 0..2 {
        let (der, number) = crl(&h, &format!("moica-{n}")).await;
        assert_eq!(number, u64::try_from(first).unwrap());
        let text = crl_text(&h, &format!("p{n}-first"), &der);
        assert!(
            text.contains("Issuing Distribution Point: critical"),
            "{text}"
        );
        assert!(text.contains(&format!("URI:{BASE}-{n}.crl")), "{text}");
        let manifest = h
            .api::<ConfigMap>()
            .get(&format!("moica-{n}-crl"))
            .await
            .unwrap();
        assert_eq!(manifest.data.unwrap()["partition"], n.to_string());
        assert_eq!(
            manifest.metadata.labels.unwrap()["chop.dev/crl-partition"],
            n.to_string()
        );
    }

    // Issue until both partitions hold a certificate (at least 4).
    let mut issued: Vec<(String, String, u32)> = Vec::new(); // (request, serial, partition)
    for i in 0..12 {
        let both = (0..2).all(|n| issued.iter().any(|c| c.2 == n));
        if i >= 4 && both {
            break;
        }
        let name = format!("sub{i}");
        let csr = h.csr(&name);
        let serial = issue(&h, &name, &format!("ra-{i:04}"), &csr).await;
        let record = record(&h, &serial).await;
        let last = u32::from_str_radix(&serial[serial.len() - 1..], 16).unwrap();
        let partition = last % 2; // serial mod 2: the parity of the last hex digit
        assert_eq!(
            record.spec.crl_partition,
            Some(partition as i32),
            "{serial}"
        );
        let cert = h.write(&format!("{name}.pem"), &record.spec.certificate);
        let text = openssl(&["x509", "-noout", "-text", "-in"], &[&cert]);
        assert!(
            text.contains(&format!("URI:{BASE}-{partition}.crl")),
            "{serial}: {text}"
        );
        assert!(!text.contains(&format!("URI:{BASE}.crl")), "{text}");
        issued.push((name, serial, partition));
    }
    assert!(
        (0..2).all(|n| issued.iter().any(|c| c.2 == n)),
        "{issued:?}"
    );

    // Revoke one certificate of partition 1; keep one of partition 0.
    let (victim, serial, p) = issued.iter().find(|c| c.2 == 1).cloned().unwrap();
    let (other, other_serial, _) = issued.iter().find(|c| c.2 == 0).cloned().unwrap();
    revoke(
        &h,
        "rev",
        json!({"certificateRequestRef": {"name": victim}}),
        "keyCompromise",
    )
    .await;
    wait_record(&h, &serial, "Revoked").await;
    let st = h
        .wait("a CRL listing the revocation", 60, || {
            let api = api.clone();
            async move {
                let st = api.get("moica").await.ok()?.status?;
                (st.entries == Some(1)).then_some(())?;
                published_with_partitions(st)
            }
        })
        .await;
    let number = u64::try_from(st.crl_number.unwrap()).unwrap();
    assert!(number > u64::try_from(first).unwrap());

    let (full, full_number) = crl(&h, "moica").await;
    let (own, own_number) = crl(&h, &format!("moica-{p}")).await;
    let (rest, rest_number) = crl(&h, "moica-0").await;
    assert_eq!(
        (full_number, own_number, rest_number),
        (number, number, number)
    );
    let full_text = crl_text(&h, "full", &full);
    assert!(full_text.contains(&serial), "{full_text}");
    assert!(
        !full_text.contains("Issuing Distribution Point"),
        "{full_text}"
    );
    let own_text = crl_text(&h, "own", &own);
    assert!(own_text.contains(&serial), "{own_text}");
    assert!(
        own_text.contains("Issuing Distribution Point: critical"),
        "{own_text}"
    );
    assert!(
        own_text.contains(&format!("URI:{BASE}-1.crl")),
        "{own_text}"
    );
    assert!(own_text.contains("Key Compromise"), "{own_text}");
    let rest_text = crl_text(&h, "rest", &rest);
    assert!(!rest_text.contains(&serial), "{rest_text}");
    assert!(rest_text.contains("No Revoked Certificates"), "{rest_text}");

    // Path validation with the partition CRLs (openssl matches the IDP
    // against the certificate's CDP).
    let victim_pem = h.path(&format!("{victim}.pem"));
    let other_pem = h.path(&format!("{other}.pem"));
    let (ok, text) = verify_with_crl(&h, "v-own", &own, &root, &victim_pem);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (ok, text) = verify_with_crl(&h, "v-full", &full, &root, &victim_pem);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (ok, text) = verify_with_crl(&h, "o-own", &rest, &root, &other_pem);
    assert!(ok, "{other_serial}: {text}");
    // The other partition's CRL is out of scope for the victim (its IDP names
    // another URL than the certificate's CDP): refused, never a "good" answer.
    let (ok, text) = verify_with_crl(&h, "v-rest", &rest, &root, &victim_pem);
    assert!(!ok, "{text}");
    assert!(text.contains("different CRL scope"), "{text}");
}
