//! A complete test PKI made with software keys, written in the `--dir` layout
//! plus what OpenSSL's own responder needs. Used by the tests, the benchmark
//! (`chop-responder gen-fixture DIR`) and for trying the binary. Not API.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ca::crl::{CrlConfig, CrlIssuer, CrlRequest, CrlScope};
use ca::csr::{SubjectKey, build_csr};
use ca::issue::{
    CaConfig, IssuanceRequest, IssuedCertificate, Issuer, RootRequest, self_sign_root,
};
use ca::name::DistinguishedName;
use ca::ocsp::{CertIdHash, OcspConfig, build_request};
use ca::profile::Profile;
use ca::revocation::{CertStatus, MemoryIndex};
use ca::serial::Serial;
use ca::signer::software::SoftwareKey;
use ca::signer::{Curve, KeySpec, Signer};
use der::Decode;
use x509_cert::Certificate;

use crate::feeder::{IndexFile, IssuedRecord};
use crate::state::{CaMaterial, MemoryCertificates, cert_pem};
use crate::{Error, Result};

/// A CA, its delegated RSA-2048 responder and some subscriber certificates.
#[derive(Debug)]
pub struct Fixture {
    /// The (root) CA certificate.
    pub ca: IssuedCertificate,
    /// The CA key.
    pub ca_key: Arc<SoftwareKey>,
    /// The delegated responder certificate.
    pub responder: IssuedCertificate,
    /// Its key.
    pub responder_key: Arc<SoftwareKey>,
    /// Subscriber certificates (EC P-521 keys: quick to make).
    pub leaves: Vec<IssuedCertificate>,
}

/// An issuer for the fixture's CA.
fn issuer(ca: &IssuedCertificate, ca_key: &Arc<SoftwareKey>) -> Result<Issuer> {
    let cert = Certificate::from_der(&ca.der).map_err(|e| Error::invalid("CA", e))?;
    let mut config = CaConfig::new(cert, ca_key.clone() as Arc<dyn Signer>);
    config.crl_urls = vec!["http://127.0.0.1/crl/ca.crl".into()];
    config.ocsp_urls = vec!["http://127.0.0.1/".into()];
    Ok(Issuer::new(config)?)
}

/// A delegated RSA-2048 OCSP responder certificate named `cn`, and its key.
fn issue_responder(issuer: &Issuer, cn: &str) -> Result<(IssuedCertificate, Arc<SoftwareKey>)> {
    let key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 })?);
    let dn = DistinguishedName::parse(&format!("C=TW, O=行政院, CN={cn}"))?;
    let csr = build_csr(key.as_ref(), &dn.to_name()?)?;
    let cert = issuer.issue(&IssuanceRequest::new(
        Profile::ocsp_responder(),
        &dn,
        SubjectKey::from_csr(&csr)?,
        Serial::random()?,
    )?)?;
    Ok((cert, key))
}

impl Fixture {
    /// Another delegated responder certificate (named `cn`) and key from the
    /// fixture's CA, e.g. a renewal.
    pub fn new_responder(&self, cn: &str) -> Result<(IssuedCertificate, Arc<SoftwareKey>)> {
        issue_responder(&issuer(&self.ca, &self.ca_key)?, cn)
    }

    /// The key of `key` as unencrypted PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub fn key_pem(key: &SoftwareKey) -> Result<String> {
        let pkcs8 = key.to_pkcs8()?;
        der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, &pkcs8)
            .map_err(|e| Error::invalid("key PEM", e))
    }

    /// The IssuedCertificate record the controller would write for `cert`,
    /// issued by the CertificateAuthority `ca`, labelled `chop.dev/ca=<ca>`, no
    /// status.
    pub fn issued_certificate(
        ca: &str,
        cert: &IssuedCertificate,
    ) -> Result<crds::IssuedCertificate> {
        let serial = cert.serial.to_hex();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "chop.dev/v1alpha1",
            "kind": "IssuedCertificate",
            "metadata": {
                "name": format!("{ca}-{}", serial.to_lowercase()),
                "labels": {crds::issued_certificate::LABEL_CA: ca},
            },
            "spec": {
                "caRef": {"name": ca},
                "serialNumber": serial,
                "subject": "CN=fixture",
                "profile": "subscriber-signature",
                "notBefore": "2026-01-01T00:00:00Z",
                "notAfter": "2027-01-01T00:00:00Z",
                "keyFingerprint": "00",
                "certificate": cert_pem(&cert.der)?,
            },
        }))
        .map_err(|e| Error::invalid("IssuedCertificate", e))
    }

    /// Make a fixture with `leaves` subscriber certificates.
    pub fn new(leaves: usize) -> Result<Self> {
        let ca_key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 })?);
        let ca_dn = DistinguishedName::parse("C=TW, O=行政院, OU=內政部憑證管理中心測試")?;
        let ca = self_sign_root(ca_key.as_ref(), &RootRequest::new(&ca_dn)?)?;
        let issuer = issuer(&ca, &ca_key)?;
        let (responder, responder_key) = issue_responder(&issuer, "chop test OCSP responder")?;
        let mut out = Vec::with_capacity(leaves);
        for i in 0..leaves {
            let key = SoftwareKey::generate(KeySpec::Ec(Curve::P521))?;
            let csr = build_csr(&key, &DistinguishedName::parse("CN=ignored")?.to_name()?)?;
            let dn = DistinguishedName::subscriber("TW", "測試", &format!("TEST{i:010}"))?;
            out.push(issuer.issue(&IssuanceRequest::new(
                Profile::subscriber_signature(),
                &dn,
                SubjectKey::from_csr(&csr)?,
                Serial::random()?,
            )?)?);
        }
        Ok(Fixture {
            ca,
            ca_key,
            responder,
            responder_key,
            leaves: out,
        })
    }

    /// `index.json` with every leaf and the responder issued, none revoked.
    pub fn index(&self) -> IndexFile {
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        };
        IndexFile {
            issued: self
                .leaves
                .iter()
                .chain([&self.responder])
                .map(|c| IssuedRecord {
                    serial: c.serial.to_hex(),
                    not_after: secs(c.not_after),
                })
                .collect(),
            revoked: Vec::new(),
        }
    }

    /// A CRL signed by the CA with no entries.
    pub fn crl(&self) -> Result<Vec<u8>> {
        self.crl_numbered(1, None)
    }

    /// A CRL signed by the CA with no entries, cRLNumber `number`: the full CRL,
    /// or with `partition` = (n, URL) partition n's.
    pub fn crl_numbered(&self, number: u64, partition: Option<(u32, &str)>) -> Result<Vec<u8>> {
        crl_signed(&self.ca.der, &self.ca_key, number, partition)
    }

    /// Another self-signed root CA named `dn`, and its key.
    pub fn other_root(dn: &str) -> Result<(IssuedCertificate, Arc<SoftwareKey>)> {
        let key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 })?);
        let root = self_sign_root(
            key.as_ref(),
            &RootRequest::new(&DistinguishedName::parse(dn)?)?,
        )?;
        Ok((root, key))
    }

    /// The material for a [`crate::StateHandle`], as the directory feeder would
    /// build it.
    pub fn material(&self, config: OcspConfig) -> Result<CaMaterial> {
        let mut crls = HashMap::new();
        crls.insert("ca".to_owned(), Bytes::from(self.crl()?));
        let mut certs = MemoryCertificates::default();
        for c in &self.leaves {
            certs.insert(c.der.clone())?;
        }
        CaMaterial::new(
            self.ca.der.clone(),
            Vec::new(),
            &self.responder.der,
            self.responder_key.clone() as Arc<dyn Signer>,
            config,
            crls,
            Arc::new(certs),
        )
    }

    /// Good statuses for every issued certificate.
    pub fn statuses(&self) -> Vec<(Serial, CertStatus)> {
        self.leaves
            .iter()
            .chain([&self.responder])
            .map(|c| (c.serial.clone(), CertStatus::Good))
            .collect()
    }

    /// An OCSP request (SHA-1 CertID, no nonce) for `serial`.
    pub fn request(&self, serial: &Serial, nonce: Option<&[u8]>) -> Result<Vec<u8>> {
        let cert = Certificate::from_der(&self.ca.der).map_err(|e| Error::invalid("CA", e))?;
        Ok(build_request(
            &cert,
            std::slice::from_ref(serial),
            CertIdHash::Sha1,
            nonce,
        )?)
    }

    /// Write the `--dir` layout into `dir`, plus `leaf-N.pem`, and for OpenSSL's
    /// responder `openssl-index.txt`; and `get-path.txt`, the URL path of a GET for
    /// leaf 0 (no nonce), `known-paths.txt` the same for every leaf, one a line.
    pub fn write_dir(&self, dir: &Path) -> Result<()> {
        let w = |name: &str, data: &[u8]| {
            let p = dir.join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            std::fs::write(&p, data).map_err(|e| Error::io(&p, e))
        };
        let ca_pem = cert_pem(&self.ca.der)?;
        w("ca.pem", ca_pem.as_bytes())?;
        w("chain.pem", ca_pem.as_bytes())?;
        w("responder.pem", cert_pem(&self.responder.der)?.as_bytes())?;
        w(
            "responder.key",
            Self::key_pem(&self.responder_key)?.as_bytes(),
        )?;
        w("crl/ca.crl", &self.crl()?)?;
        let mut txt = String::new();
        for (i, c) in self.leaves.iter().enumerate() {
            let pem = cert_pem(&c.der)?;
            w(&format!("leaf-{i}.pem"), pem.as_bytes())?;
            w(&format!("certs/{}.pem", c.serial.to_hex()), pem.as_bytes())?;
            txt.push_str(&format!(
                "V\t{}\t\t{}\tunknown\t/CN=leaf{i}\n",
                utc_time(c.not_after),
                c.serial.to_hex()
            ));
        }
        w("openssl-index.txt", txt.as_bytes())?;
        w("openssl-index.txt.attr", b"unique_subject = no\n")?;
        let json = serde_json::to_vec_pretty(&self.index())
            .map_err(|e| Error::invalid("index.json", e))?;
        w("index.json", &json)?;
        if let Some(leaf) = self.leaves.first() {
            w(
                "get-path.txt",
                get_path(&self.request(&leaf.serial, None)?).as_bytes(),
            )?;
        }
        let mut known = String::new();
        for leaf in &self.leaves {
            known.push_str(&get_path(&self.request(&leaf.serial, None)?));
            known.push('\n');
        }
        w("known-paths.txt", known.as_bytes())?;
        Ok(())
    }
}

/// A CRL with no entries signed by `key` as the CA `ca_der`, cRLNumber
/// `number`: full, or with `partition` = (n, URL) partition n's.
pub fn crl_signed(
    ca_der: &[u8],
    key: &Arc<SoftwareKey>,
    number: u64,
    partition: Option<(u32, &str)>,
) -> Result<Vec<u8>> {
    let now = SystemTime::now();
    let scope = match partition {
        None => CrlScope::Full,
        Some((index, url)) => CrlScope::Partition {
            index,
            distribution_point_url: url.to_owned(),
        },
    };
    let crl = CrlIssuer::new(ca_der, key.clone() as Arc<dyn Signer>, CrlConfig::default())?.issue(
        &MemoryIndex::new(),
        &CrlRequest {
            number,
            this_update: now,
            next_update: now + Duration::from_secs(24 * 3600),
            scope,
        },
    )?;
    Ok(crl.der)
}

/// `/` + the URL-encoded base64 of `der` (RFC 6960 A.1.1).
pub fn get_path(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::with_capacity(b64.len() + 16);
    s.push('/');
    for c in b64.chars() {
        match c {
            '+' => s.push_str("%2B"),
            '/' => s.push_str("%2F"),
            '=' => s.push_str("%3D"),
            c => s.push(c),
        }
    }
    s
}

/// OpenSSL index.txt time: `YYMMDDHHMMSSZ`.
fn utc_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(d) => format!(
            "{:02}{:02}{:02}{:02}{:02}{:02}Z",
            d.year().rem_euclid(100),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => "491231235959Z".into(),
    }
}
