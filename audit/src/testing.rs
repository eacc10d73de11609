//! A software audit key for tests (feature `test-signer`): never for production,
//! where the audit key lives in the HSM.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use crds::AuditRecord;

use crate::key::{self, ALGORITHM};
use crate::seal::TreeHeadSigner;

/// An ECDSA P-256 key in memory.
pub struct SoftwareSigner {
    pair: EcdsaKeyPair,
    spki: Vec<u8>,
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareSigner")
            .field("key_id", &key::key_id(&self.spki))
            .finish_non_exhaustive()
    }
}

/// Why the software key failed.
#[derive(Debug, thiserror::Error)]
#[error("software signing failed")]
pub struct SignError;

impl SoftwareSigner {
    /// A new random key.
    #[allow(clippy::expect_used)]
    pub fn generate() -> SoftwareSigner {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
            .expect("generating a P-256 key");
        let spki = pair
            .public_key()
            .as_der()
            .expect("encoding the public key")
            .as_ref()
            .to_vec();
        SoftwareSigner { pair, spki }
    }

    /// The public key, DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The public key, PEM.
    pub fn pem(&self) -> String {
        key::spki_to_pem(&self.spki)
    }
}

impl TreeHeadSigner for SoftwareSigner {
    type Error = SignError;
    fn key_id(&self) -> String {
        key::key_id(&self.spki)
    }
    fn algorithm(&self) -> &str {
        ALGORITHM
    }
    fn sign(&self, text: &[u8]) -> Result<Vec<u8>, SignError> {
        self.pair
            .sign(&SystemRandom::new(), text)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SignError)
    }
}

/// A record of event `event` about CertificateRequest `req-{n}` (sequence and
/// previousHash left for [`crate::seal::seal`] to assign).
pub fn record(event: &str, n: usize) -> AuditRecord {
    AuditRecord {
        time: "2026-12-03T15:40:00.000000Z".to_owned(),
        event: event.to_owned(),
        object: Some(crds::audit_segment::AuditObject {
            kind: "CertificateRequest".to_owned(),
            namespace: Some("moica".to_owned()),
            name: format!("req-{n}"),
            ..crds::audit_segment::AuditObject::default()
        }),
        outcome: "succeeded".to_owned(),
        ..AuditRecord::default()
    }
}
