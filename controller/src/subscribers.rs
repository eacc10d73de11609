//! CA-assigned subscriber identifiers (CPS §3.1.5, §3.1.7).
//!
//! Each CA assigns one identifier per RA subscriber reference and reuses it for
//! every later request with that reference (signature and encryption
//! certificates of one person share it). The register is keyed by the SHA-256
//! (hex) of the reference, so the RA's reference appears neither in the
//! certificate nor in clear in the register. Every write carries the
//! `resourceVersion` it read, so two concurrent requests for one reference can
//! never get two identifiers, and an identifier is never handed out twice.
//!
//! Identifiers are `MOICA` followed by 10 random decimal digits: never derived
//! from the national ID (CPS §9.4).
//!
//! ## Sharding
//! The register is split over [`SHARDS`] ConfigMaps `<ca>-subscribers-<xyz>`,
//! `xyz` being the first three hex digits of the reference's key, created when
//! first needed. A shard holds about 10,000 subscribers (ConfigMaps stop at
//! 1 MiB), so a CA holds about 40 million; and concurrent issuance for
//! different people mostly writes different, small objects instead of queueing
//! on one growing one. Identifiers stay unique across shards without reading
//! them all: shard `s` only hands out numbers `n` with `n mod SHARDS == s`, so
//! two shards can never choose the same identifier, and uniqueness is checked
//! within the shard.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::error::{Error, Result};

/// Prefix of every identifier.
pub const ID_PREFIX: &str = "MOICA";

/// Number of register shards per CA.
pub const SHARDS: u64 = 4096;

/// The shard (0..[`SHARDS`]) of a register key: its first three hex digits.
pub fn shard_of(key: &str) -> u64 {
    key.get(..3)
        .and_then(|p| u64::from_str_radix(p, 16).ok())
        .unwrap_or(0)
}

/// The name of the register shard of CA `ca` holding `key`.
pub fn configmap_name(ca: &str, key: &str) -> String {
    format!("{ca}-subscribers-{:03x}", shard_of(key))
}

/// The register key for a subscriber reference: hex SHA-256.
pub fn key_for(reference: &str) -> String {
    hex_lower(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, reference.as_bytes()).as_ref())
}

/// Lower-case hex.
pub fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh identifier for shard `shard` from `random` that is not among
/// `taken`: its number is congruent to `shard` modulo [`SHARDS`].
pub fn choose_id<'a>(
    shard: u64,
    taken: impl Iterator<Item = &'a String> + Clone,
    mut random: impl FnMut() -> Result<u64>,
) -> Result<String> {
    const SPACE: u64 = 10_000_000_000;
    for _ in 0..64 {
        // The largest multiple of SHARDS below SPACE keeps every number < SPACE.
        let base = random()? % (SPACE / SHARDS);
        let candidate = format!("{ID_PREFIX}{:010}", base * SHARDS + shard % SHARDS);
        if !taken.clone().any(|t| *t == candidate) {
            return Ok(candidate);
        }
    }
    Err(Error::Invalid {
        object: "subscriber register".into(),
        message: "could not find a free subscriber identifier".into(),
    })
}

fn random_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| Error::Invalid {
        object: "subscriber register".into(),
        message: "random number generator failed".into(),
    })?;
    Ok(u64::from_be_bytes(b))
}

/// The identifier the register holds for `reference` at CA `ca`, if any (never
/// assigns one): how the controller checks a reserved subscriber id before it
/// signs with it.
pub async fn lookup(api: &Api<ConfigMap>, ca: &str, reference: &str) -> Result<Option<String>> {
    let key = key_for(reference);
    let name = configmap_name(ca, &key);
    Ok(api
        .get_opt(&name)
        .await
        .map_err(Error::kube("get subscriber register"))?
        .and_then(|cm| cm.data.and_then(|mut d| d.remove(&key))))
}

/// The identifier of `reference` for CA `ca`, assigning a new one if needed.
pub async fn assign(api: &Api<ConfigMap>, ca: &str, reference: &str) -> Result<String> {
    let key = key_for(reference);
    let name = configmap_name(ca, &key);
    let shard = shard_of(&key);
    // Each conflict means another writer made progress, so this terminates;
    // the bound only guards against a pathological storm.
    for _ in 0..64 {
        let existing = api
            .get_opt(&name)
            .await
            .map_err(Error::kube("get subscriber register"))?;
        let outcome = match existing {
            Some(mut cm) => {
                let data = cm.data.get_or_insert_with(BTreeMap::new);
                if let Some(id) = data.get(&key) {
                    return Ok(id.clone());
                }
                let id = choose_id(shard, data.values(), random_u64)?;
                data.insert(key.clone(), id.clone());
                // `replace` sends the resourceVersion read above: a concurrent
                // writer makes this fail with 409 and we start over.
                api.replace(&name, &PostParams::default(), &cm)
                    .await
                    .map(|_| id)
            }
            None => {
                let id = choose_id(shard, std::iter::empty::<&String>(), random_u64)?;
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(BTreeMap::from([(
                            crds::issued_certificate::LABEL_CA.to_string(),
                            ca.to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([(key.clone(), id.clone())])),
                    ..ConfigMap::default()
                };
                api.create(&PostParams::default(), &cm).await.map(|_| id)
            }
        };
        match outcome {
            Ok(id) => return Ok(id),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(Error::kube("write subscriber register")(e)),
        }
    }
    Err(Error::Invalid {
        object: format!("ConfigMap/{name}"),
        message: "too many concurrent updates of the subscriber register".into(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_have_the_prefix_and_ten_digits() {
        let id = choose_id(7, std::iter::empty::<&String>(), || Ok(42)).unwrap();
        assert_eq!(id, format!("MOICA{:010}", 42 * SHARDS + 7));
        let max = choose_id(SHARDS - 1, std::iter::empty::<&String>(), || Ok(u64::MAX)).unwrap();
        assert_eq!(max.len(), 15, "{max}");
    }

    #[test]
    fn a_taken_id_is_never_chosen_again() {
        let first = choose_id(3, std::iter::empty::<&String>(), || Ok(1)).unwrap();
        let taken = [first.clone()];
        let mut draws = [1u64, 1, 2].into_iter();
        let id = choose_id(3, taken.iter(), || Ok(draws.next().unwrap())).unwrap();
        assert_ne!(id, first);
        assert_eq!(id, format!("MOICA{:010}", 2 * SHARDS + 3));
    }

    #[test]
    fn shards_never_share_an_identifier() {
        // Whatever the random draws, a number tells its shard.
        for shard in [0, 1, 2047, SHARDS - 1] {
            for draw in [0u64, 1, 12_345, u64::MAX] {
                let id = choose_id(shard, std::iter::empty::<&String>(), || Ok(draw)).unwrap();
                let n: u64 = id[ID_PREFIX.len()..].parse().unwrap();
                assert_eq!(n % SHARDS, shard);
                assert!(n < 10_000_000_000);
            }
        }
        assert_eq!(shard_of("fff0"), 4095);
        assert_eq!(configmap_name("moica", "0a1b"), "moica-subscribers-0a1");
    }

    #[test]
    fn the_reference_is_not_stored_in_clear() {
        let k = key_for("ra:person:42");
        assert_eq!(k.len(), 64);
        assert!(!k.contains("person"));
    }
}
