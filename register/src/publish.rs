//! CRL publication as chunked ConfigMaps (ADR 0002 §4), and the reader the
//! responder uses.
//!
//! A CRL of 1,000,000 entries is ~40 MB, far over a ConfigMap's 1 MiB, so one
//! CRL generation is written as
//!
//! ```text
//! <schedule>-crl-<number>-<i>   i = 0..chunks   binaryData["chunk"] ≤ 900 KiB
//! <schedule>-crl                the manifest: number, chunks, sha256, sizeBytes,
//!                               thisUpdate, nextUpdate, ca, partition
//! ```
//!
//! A schedule with `partitions: P` publishes P more CRLs, each a publication of
//! its own named [`partition_publication`] (`<schedule>-<n>`, so its manifest is
//! `<schedule>-<n>-crl`), labelled `chop.dev/crl-partition=<n>`; its manifest
//! says `partition: "<n>"`.
//!
//! Order (the manifest is the commit point for readers):
//! 1. every chunk of the new generation is applied;
//! 2. the manifest is applied, pointing at the new generation;
//! 3. generations older than the previous one are deleted. The previous one is
//!    kept, so a reader that read the old manifest just before step 2 can still
//!    fetch its chunks.
//!
//! A reader ([`read_crl`]) reads the manifest, fetches its chunks, and checks
//! size and SHA-256 before handing the DER out: a torn or tampered publication
//! is an error, never a wrong CRL. Every object carries the labels
//! `chop.dev/crl-schedule`, `chop.dev/ca`, `chop.dev/crl-number` and an
//! ownerReference to the CertificateAuthority, not to the schedule: deleting a
//! schedule leaves the CA's published CRLs in place, and their numbers
//! ([`highest_published`]) keep the next schedule's numbers above them (RFC 5280
//! §5.2.3). Garbage collection only happens in a real cluster; the test plane
//! has no garbage collector.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::{CONTROLLER_FIELD_MANAGER as FIELD_MANAGER, Error, Result, hex_lower};

/// Largest chunk: 900 KiB, leaving room for metadata under the API server's
/// 1 MiB limit on a ConfigMap.
pub const CHUNK_SIZE: usize = 900 * 1024;
/// Label naming the CRLSchedule a publication belongs to.
pub const LABEL_SCHEDULE: &str = "chop.dev/crl-schedule";
/// Label holding the CRL number of a chunk.
pub const LABEL_CRL_NUMBER: &str = "chop.dev/crl-number";
/// Label holding the index of a chunk.
pub const LABEL_CHUNK: &str = "chop.dev/crl-chunk";
/// Label holding the partition number of a partition CRL's objects (absent on
/// the full CRL's).
pub const LABEL_PARTITION: &str = "chop.dev/crl-partition";
/// The binaryData key of a chunk.
pub const CHUNK_KEY: &str = "chunk";

/// The manifest's name: `<schedule>-crl`.
pub fn manifest_name(schedule: &str) -> String {
    format!("{schedule}-crl")
}

/// The publication name of partition `n` of `schedule`: `<schedule>-<n>`.
pub fn partition_publication(schedule: &str, n: u32) -> String {
    format!("{schedule}-{n}")
}

/// A chunk's name: `<schedule>-crl-<number>-<i>`.
pub fn chunk_name(schedule: &str, number: u64, index: usize) -> String {
    format!("{schedule}-crl-{number}-{index}")
}

/// What the manifest says about the current generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The CA whose CRL it is.
    pub ca: String,
    /// cRLNumber.
    pub number: u64,
    /// Number of chunks.
    pub chunks: usize,
    /// Size of the whole DER CRL.
    pub size_bytes: usize,
    /// SHA-256 of the whole DER CRL, lower-case hex.
    pub sha256: String,
    /// thisUpdate, RFC 3339.
    pub this_update: String,
    /// nextUpdate, RFC 3339.
    pub next_update: String,
    /// `full`, or the partition number.
    pub partition: String,
}

impl Manifest {
    /// The manifest of `der`.
    pub fn of(ca: &str, number: u64, der: &[u8], this_update: String, next_update: String) -> Self {
        Manifest {
            ca: ca.to_string(),
            number,
            chunks: der.chunks(CHUNK_SIZE).count(),
            size_bytes: der.len(),
            sha256: sha256_hex(der),
            this_update,
            next_update,
            partition: "full".into(),
        }
    }

    /// The same, for partition `n`.
    #[must_use]
    pub fn in_partition(mut self, n: u32) -> Self {
        self.partition = n.to_string();
        self
    }

    /// As ConfigMap `data`.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("ca".into(), self.ca.clone()),
            ("number".into(), self.number.to_string()),
            ("chunks".into(), self.chunks.to_string()),
            ("sizeBytes".into(), self.size_bytes.to_string()),
            ("sha256".into(), self.sha256.clone()),
            ("thisUpdate".into(), self.this_update.clone()),
            ("nextUpdate".into(), self.next_update.clone()),
            ("partition".into(), self.partition.clone()),
        ])
    }

    /// From ConfigMap `data`; `object` names the ConfigMap in errors.
    pub fn from_data(data: &BTreeMap<String, String>, object: &str) -> Result<Self> {
        let get = |k: &str| {
            data.get(k).cloned().ok_or_else(|| Error::Invalid {
                object: object.to_string(),
                message: format!("CRL manifest has no {k:?}"),
            })
        };
        let num = |k: &str| -> Result<u64> {
            get(k)?.parse().map_err(|e| Error::Invalid {
                object: object.to_string(),
                message: format!("CRL manifest {k:?}: {e}"),
            })
        };
        let usize_of = |k: &str| -> Result<usize> {
            usize::try_from(num(k)?).map_err(|e| Error::Invalid {
                object: object.to_string(),
                message: format!("CRL manifest {k:?}: {e}"),
            })
        };
        Ok(Manifest {
            ca: get("ca")?,
            number: num("number")?,
            chunks: usize_of("chunks")?,
            size_bytes: usize_of("sizeBytes")?,
            sha256: get("sha256")?,
            this_update: get("thisUpdate")?,
            next_update: get("nextUpdate")?,
            partition: get("partition").unwrap_or_else(|_| "full".into()),
        })
    }
}

/// SHA-256, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex_lower(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

/// Split `der` into chunks of at most [`CHUNK_SIZE`] (pure).
pub fn split(der: &[u8]) -> Vec<&[u8]> {
    der.chunks(CHUNK_SIZE).collect()
}

/// Join `chunks` and check them against `manifest` (count, size, SHA-256);
/// `object` names the manifest in errors (pure).
pub fn reassemble(manifest: &Manifest, chunks: &[Vec<u8>], object: &str) -> Result<Vec<u8>> {
    let bad = |message: String| Error::Invalid {
        object: object.to_string(),
        message,
    };
    if chunks.len() != manifest.chunks {
        return Err(bad(format!(
            "CRL {} has {} chunks, the manifest says {}",
            manifest.number,
            chunks.len(),
            manifest.chunks
        )));
    }
    let mut der = Vec::with_capacity(manifest.size_bytes);
    for c in chunks {
        der.extend_from_slice(c);
    }
    if der.len() != manifest.size_bytes {
        return Err(bad(format!(
            "CRL {} is {} bytes, the manifest says {}",
            manifest.number,
            der.len(),
            manifest.size_bytes
        )));
    }
    let hash = sha256_hex(&der);
    if hash != manifest.sha256 {
        return Err(bad(format!(
            "CRL {}: SHA-256 {hash} does not match the manifest's {}",
            manifest.number, manifest.sha256
        )));
    }
    Ok(der)
}

/// One CRL to publish.
#[derive(Clone, Debug)]
pub struct Publication<'a> {
    /// Namespace of the schedule.
    pub namespace: &'a str,
    /// The publication's name: the CRLSchedule's name, or for a partition CRL
    /// [`partition_publication`].
    pub schedule: &'a str,
    /// Owner reference to the CRLSchedule, if any.
    pub owner: Option<OwnerReference>,
    /// What the manifest will say.
    pub manifest: Manifest,
}

fn meta(p: &Publication<'_>, name: String, chunk: Option<usize>) -> ObjectMeta {
    let mut labels = BTreeMap::from([
        (LABEL_SCHEDULE.to_string(), p.schedule.to_string()),
        (
            crds::issued_certificate::LABEL_CA.to_string(),
            p.manifest.ca.clone(),
        ),
        (LABEL_CRL_NUMBER.to_string(), p.manifest.number.to_string()),
    ]);
    if let Some(i) = chunk {
        labels.insert(LABEL_CHUNK.to_string(), i.to_string());
    }
    if p.manifest.partition != "full" {
        labels.insert(LABEL_PARTITION.to_string(), p.manifest.partition.clone());
    }
    ObjectMeta {
        name: Some(name),
        namespace: Some(p.namespace.to_string()),
        labels: Some(labels),
        owner_references: p.owner.clone().map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

async fn apply_cm(api: &Api<ConfigMap>, cm: &ConfigMap, action: &'static str) -> Result<()> {
    let name = cm.name_any();
    let mut body = serde_json::to_value(cm).map_err(|e| Error::Invalid {
        object: format!("ConfigMap/{}/{name}", cm.namespace().unwrap_or_default()),
        message: format!("serialise: {e}"),
    })?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "ConfigMap".into();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(action))?;
    Ok(())
}

/// Publish `der` as described by `p`: chunks, then the manifest (the commit
/// point), then delete generations older than the previous one.
pub async fn publish(client: &Client, p: &Publication<'_>, der: &[u8]) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), p.namespace);
    for (i, chunk) in split(der).into_iter().enumerate() {
        let cm = ConfigMap {
            metadata: meta(p, chunk_name(p.schedule, p.manifest.number, i), Some(i)),
            binary_data: Some(BTreeMap::from([(
                CHUNK_KEY.to_string(),
                ByteString(chunk.to_vec()),
            )])),
            ..ConfigMap::default()
        };
        apply_cm(&api, &cm, "apply CRL chunk ConfigMap").await?;
    }
    let manifest = ConfigMap {
        metadata: meta(p, manifest_name(p.schedule), None),
        data: Some(p.manifest.to_data()),
        ..ConfigMap::default()
    };
    apply_cm(&api, &manifest, "apply CRL manifest ConfigMap").await?;
    collect_garbage(&api, p.schedule, p.manifest.number).await
}

/// Delete chunks of generations older than the newest one before `current`
/// (readers mid-read of the previous generation keep their chunks).
async fn collect_garbage(api: &Api<ConfigMap>, schedule: &str, current: u64) -> Result<()> {
    let lp = ListParams::default().labels(&format!("{LABEL_SCHEDULE}={schedule},{LABEL_CHUNK}"));
    let list = api
        .list_metadata(&lp)
        .await
        .map_err(Error::kube("list CRL chunk ConfigMaps"))?;
    let number = |m: &kube::core::PartialObjectMeta<ConfigMap>| -> Option<u64> {
        m.labels().get(LABEL_CRL_NUMBER)?.parse().ok()
    };
    let previous = list
        .items
        .iter()
        .filter_map(number)
        .filter(|n| *n < current)
        .max();
    let Some(previous) = previous else {
        return Ok(());
    };
    for m in &list.items {
        if number(m).is_some_and(|n| n < previous) {
            match api.delete(&m.name_any(), &DeleteParams::default()).await {
                // Already gone (another reader's cleanup, a retry): fine.
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::kube("delete old CRL chunk ConfigMap")(e)),
            }
        }
    }
    Ok(())
}

/// The highest CRL number on the published CRL objects (manifests and chunks,
/// of any schedule and scope) of CA `ca` in `namespace`, if any: what the CA
/// has used even when the schedule that published them is gone. A label that
/// is not a number cannot be one the controller wrote: it is skipped with a
/// warning (the clock floor of the controller's `next_number` still holds).
///
pub async fn highest_published(client: &Client, namespace: &str, ca: &str) -> Result<Option<u64>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!(
        "{}={ca},{LABEL_CRL_NUMBER}",
        crds::issued_certificate::LABEL_CA
    ));
    let list = api
        .list_metadata(&lp)
        .await
        .map_err(Error::kube("list published CRL ConfigMaps"))?;
    let mut highest = None;
    for m in &list.items {
        let label = m
            .labels()
            .get(LABEL_CRL_NUMBER)
            .cloned()
            .unwrap_or_default();
        match label.parse::<u64>() {
            Ok(n) => highest = highest.max(Some(n)),
            Err(_) => tracing::warn!(
                configmap = %m.name_any(),
                "published CRL object with a CRL number label that is not a number: ignored"
            ),
        }
    }
    Ok(highest)
}

/// Read the CRL currently published for `schedule` in `namespace`: the
/// manifest, then its chunks; the size and SHA-256 are verified.
pub async fn read_crl(client: &Client, namespace: &str, schedule: &str) -> Result<Vec<u8>> {
    read_published(client, namespace, schedule)
        .await
        .map(|(_, der)| der)
}

/// Like [`read_crl`], with the manifest.
pub async fn read_published(
    client: &Client,
    namespace: &str,
    schedule: &str,
) -> Result<(Manifest, Vec<u8>)> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = manifest_name(schedule);
    let object = format!("ConfigMap/{namespace}/{name}");
    let cm = api
        .get(&name)
        .await
        .map_err(Error::kube("get CRL manifest ConfigMap"))
        .map_err(|e| e.about(&object))?;
    let manifest = Manifest::from_data(&cm.data.unwrap_or_default(), &object)?;
    let mut chunks = Vec::with_capacity(manifest.chunks);
    for i in 0..manifest.chunks {
        let chunk = chunk_name(schedule, manifest.number, i);
        let chunk_object = format!("ConfigMap/{namespace}/{chunk}");
        let cm = api
            .get(&chunk)
            .await
            .map_err(Error::kube("get CRL chunk ConfigMap"))
            .map_err(|e| e.about(&chunk_object))?;
        let data = cm
            .binary_data
            .and_then(|mut b| b.remove(CHUNK_KEY))
            .ok_or_else(|| Error::Invalid {
                object: chunk_object,
                message: format!("no binaryData {CHUNK_KEY:?}"),
            })?;
        chunks.push(data.0);
    }
    let der = reassemble(&manifest, &chunks, &object)?;
    Ok((manifest, der))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn blob(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn a_two_mib_crl_splits_into_three_chunks_and_reassembles() {
        let der = blob(2 * 1024 * 1024);
        let parts: Vec<Vec<u8>> = split(&der).into_iter().map(<[u8]>::to_vec).collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.len() <= CHUNK_SIZE));
        let m = Manifest::of("root", 7, &der, "t".into(), "n".into());
        assert_eq!(m.chunks, 3);
        assert_eq!(reassemble(&m, &parts, "m").unwrap(), der);
        let back = Manifest::from_data(&m.to_data(), "m").unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn torn_or_tampered_publications_are_refused() {
        let der = blob(2 * 1024 * 1024);
        let mut parts: Vec<Vec<u8>> = split(&der).into_iter().map(<[u8]>::to_vec).collect();
        let m = Manifest::of("root", 7, &der, "t".into(), "n".into());
        // Missing chunk.
        assert!(reassemble(&m, &parts[..2], "m").is_err());
        // Flipped bit.
        parts[1][10] ^= 1;
        let e = reassemble(&m, &parts, "ConfigMap/ns/s-crl").unwrap_err();
        assert!(e.to_string().contains("ConfigMap/ns/s-crl"), "{e}");
        assert!(e.to_string().contains("SHA-256"), "{e}");
        // Truncated chunk.
        parts[1][10] ^= 1;
        parts[2].pop();
        assert!(reassemble(&m, &parts, "m").is_err());
    }

    #[test]
    fn small_crls_are_one_chunk_and_names_follow_the_adr() {
        assert_eq!(split(&blob(1000)).len(), 1);
        assert_eq!(split(&blob(CHUNK_SIZE)).len(), 1);
        assert_eq!(split(&blob(CHUNK_SIZE + 1)).len(), 2);
        assert_eq!(chunk_name("moica", 12, 0), "moica-crl-12-0");
        assert_eq!(manifest_name("moica"), "moica-crl");
        assert_eq!(partition_publication("moica", 3), "moica-3");
        let m = Manifest::of("root", 7, &blob(10), "t".into(), "n".into()).in_partition(3);
        assert_eq!(
            Manifest::from_data(&m.to_data(), "m").unwrap().partition,
            "3"
        );
    }
}
