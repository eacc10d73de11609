//! Writes a complete sample PKI made by chop's core into a directory, so you can
//! inspect chop's output with your own tools.
//!
//! ```sh
//! cargo run -p ca --example sample_pki -- DIR
//! ```
//!
//! The root and subordinate CA keys are RSA-2048 keys generated inside a temporary
//! SoftHSM2 token that this program creates (and removes when it ends); subscriber
//! keys are made "client-side" in software and reach the CA as PKCS#10 requests,
//! as they would from an RA. Everything is MOICA-shaped: CA DN `C=TW, O=行政院,
//! OU=內政部憑證管理中心`, subscriber `C=TW, CN=王小明, serialNumber=<CA-assigned id>`.
//!
//! Files written (PEM certificates, DER CRLs and OCSP messages):
//!
//! | file | what |
//! |---|---|
//! | `root.pem`, `subordinate.pem`, `chain.pem` | the CAs; chain = subordinate + root |
//! | `signature.pem`, `encryption.pem` | one subscriber's signature (RSA) and encryption (EC P-521) certificates |
//! | `responder.pem` | the subordinate's delegated OCSP responder (id-pkix-ocsp-nocheck) |
//! | `revoked.pem`, `held.pem` | revoked (keyCompromise) and suspended (certificateHold) certificates |
//! | `crl.der` | the subordinate's CRL listing those two |
//! | `root-crl.der` | the root's CRL (covering the subordinate, which is not revoked) |
//! | `ocsp-{good,revoked,held,unknown}.der` and `.req.der` | OCSP responses and the requests they answer; `unknown` asks about a serial never issued |

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ca::crl::{CrlConfig, CrlIssuer, CrlRequest, CrlScope};
use ca::csr::{SubjectKey, build_csr};
use ca::issue::{
    CaConfig, IssuanceRequest, IssuedCertificate, Issuer, RootRequest, self_sign_root,
};
use ca::name::DistinguishedName;
use ca::ocsp::{CertIdHash, OcspConfig, OcspResponder, build_request};
use ca::profile::Profile;
use ca::revocation::{MemoryIndex, Reason, RevokedEntry};
use ca::serial::Serial;
use ca::signer::pkcs11::KeyRef;
use ca::signer::software::SoftwareKey;
use ca::signer::{Curve, KeySpec, Signer};
use der::Decode;
use x509_cert::Certificate;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const REPO: &str = "http://repository.moica.example.tw";

fn main() -> Result<(), BoxError> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: sample_pki DIR");
        std::process::exit(2);
    };
    if let Some(status) = ca::softhsm::with_private_token_dir()? {
        std::process::exit(status.code().unwrap_or(1));
    }
    std::fs::create_dir_all(&dir)?;
    write_sample(&dir)?;
    println!("sample PKI written to {}", dir.display());
    println!("try:");
    let d = dir.display();
    println!(
        "  openssl verify -x509_strict -CAfile {d}/root.pem -untrusted {d}/subordinate.pem {d}/signature.pem"
    );
    println!("  openssl crl -inform DER -in {d}/crl.der -CAfile {d}/chain.pem -noout -text");
    println!(
        "  openssl ocsp -respin {d}/ocsp-revoked.der -issuer {d}/subordinate.pem -CAfile {d}/chain.pem -cert {d}/revoked.pem -resp_text"
    );
    Ok(())
}

fn write_sample(dir: &Path) -> Result<(), BoxError> {
    let now = SystemTime::now();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes);

    // The CA keys live in the HSM.
    let token = ca::softhsm::TestToken::new()?;
    let t = token.open()?;
    t.generate_key("moica-root", None, KeySpec::Rsa { bits: 2048 })?;
    t.generate_key("moica-sub", None, KeySpec::Rsa { bits: 2048 })?;
    let root_signer: Arc<dyn Signer> = Arc::new(t.signer(&KeyRef::label("moica-root"))?);
    let sub_signer: Arc<dyn Signer> = Arc::new(t.signer(&KeyRef::label("moica-sub"))?);

    // Root: self-signed.
    let root_dn = DistinguishedName::parse("C=TW, O=行政院, OU=內政部憑證管理中心根CA")?;
    let root = self_sign_root(root_signer.as_ref(), &RootRequest::new(&root_dn)?)?;
    write("root.pem", root.to_pem()?.as_bytes())?;
    let mut root_config = CaConfig::new(Certificate::from_der(&root.der)?, root_signer.clone());
    root_config.crl_urls = vec![format!("{REPO}/crl/root.crl")];
    root_config.ca_issuers_urls = vec![format!("{REPO}/certs/root.cer")];
    let root_issuer = Issuer::new(root_config)?;

    // Subordinate: its CSR signed by the root.
    let sub_dn = DistinguishedName::parse("C=TW, O=行政院, OU=內政部憑證管理中心")?;
    let sub_csr = ca::issue::subordinate_csr(sub_signer.as_ref(), &sub_dn)?;
    let sub = root_issuer.issue(&IssuanceRequest::new(
        Profile::subordinate_ca(),
        &sub_dn,
        SubjectKey::from_csr(&sub_csr)?,
        Serial::random()?,
    )?)?;
    write("subordinate.pem", sub.to_pem()?.as_bytes())?;
    write(
        "chain.pem",
        format!("{}{}", sub.to_pem()?, root.to_pem()?).as_bytes(),
    )?;
    let mut sub_config = CaConfig::new(Certificate::from_der(&sub.der)?, sub_signer.clone());
    sub_config.crl_urls = vec![format!("{REPO}/crl/moica.crl")];
    sub_config.ocsp_urls = vec!["http://ocsp.moica.example.tw".into()];
    sub_config.ca_issuers_urls = vec![format!("{REPO}/certs/moica.cer")];
    let sub_issuer = Issuer::new(sub_config)?;

    // One subscriber: a signature (RSA) and an encryption (EC P-521) certificate
    // under the same CA-assigned identifier; the national ID never appears.
    let subscriber = DistinguishedName::subscriber("TW", "王小明", "MOICA0000000001")?;
    let issue = |profile: Profile,
                 key: KeySpec,
                 dn: &DistinguishedName|
     -> Result<IssuedCertificate, BoxError> {
        let key = SoftwareKey::generate(key)?;
        let csr = build_csr(
            &key,
            &DistinguishedName::parse("CN=ignored by the CA")?.to_name()?,
        )?;
        Ok(sub_issuer.issue(&IssuanceRequest::new(
            profile,
            dn,
            SubjectKey::from_csr(&csr)?,
            Serial::random()?,
        )?)?)
    };
    let signature = issue(
        Profile::subscriber_signature(),
        KeySpec::Rsa { bits: 2048 },
        &subscriber,
    )?;
    let encryption = issue(
        Profile::subscriber_encryption(),
        KeySpec::Ec(Curve::P521),
        &subscriber,
    )?;
    let revoked = issue(
        Profile::subscriber_signature(),
        KeySpec::Rsa { bits: 2048 },
        &DistinguishedName::subscriber("TW", "陳大文", "MOICA0000000002")?,
    )?;
    let held = issue(
        Profile::subscriber_signature(),
        KeySpec::Rsa { bits: 2048 },
        &DistinguishedName::subscriber("TW", "林美玲", "MOICA0000000003")?,
    )?;
    write("signature.pem", signature.to_pem()?.as_bytes())?;
    write("encryption.pem", encryption.to_pem()?.as_bytes())?;
    write("revoked.pem", revoked.to_pem()?.as_bytes())?;
    write("held.pem", held.to_pem()?.as_bytes())?;

    // The delegated OCSP responder: a software key (responder replicas hold it),
    // certified by the subordinate's HSM key.
    let responder_key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 })?);
    let responder_dn =
        DistinguishedName::parse("C=TW, O=行政院, OU=內政部憑證管理中心, CN=MOICA OCSP Responder")?;
    let responder_csr = build_csr(responder_key.as_ref(), &responder_dn.to_name()?)?;
    let responder = sub_issuer.issue(&IssuanceRequest::new(
        Profile::ocsp_responder(),
        &responder_dn,
        SubjectKey::from_csr(&responder_csr)?,
        Serial::random()?,
    )?)?;
    write("responder.pem", responder.to_pem()?.as_bytes())?;

    // One index is the source of truth for both the CRL and OCSP (CPS §7.3).
    let mut index = MemoryIndex::new();
    for c in [&signature, &encryption, &revoked, &held, &responder] {
        index.issue(&c.serial, c.not_after, None)?;
    }
    let revoked_at = now - Duration::from_secs(3600);
    index.revoke(&RevokedEntry {
        serial: revoked.serial.clone(),
        revoked_at,
        reason: Reason::KeyCompromise,
        invalidity_date: Some(revoked_at - Duration::from_secs(86_400)),
        not_after: revoked.not_after,
        partition: None,
    })?;
    index.revoke(&RevokedEntry {
        serial: held.serial.clone(),
        revoked_at,
        reason: Reason::CertificateHold,
        invalidity_date: None,
        not_after: held.not_after,
        partition: None,
    })?;

    let crl_request = |number| CrlRequest {
        number,
        this_update: now,
        next_update: now + Duration::from_secs(24 * 3600),
        scope: CrlScope::Full,
    };
    let crl = CrlIssuer::new(&sub.der, sub_signer.clone(), CrlConfig::default())?
        .issue(&index, &crl_request(1))?;
    write("crl.der", &crl.der)?;
    let mut root_index = MemoryIndex::new();
    root_index.issue(&sub.serial, sub.not_after, None)?;
    let root_crl = CrlIssuer::new(&root.der, root_signer.clone(), CrlConfig::default())?
        .issue(&root_index, &crl_request(1))?;
    write("root-crl.der", &root_crl.der)?;

    let ocsp = OcspResponder::new(
        &sub.der,
        &responder.der,
        responder_key,
        OcspConfig::default(),
    )?;
    let sub_cert = Certificate::from_der(&sub.der)?;
    let never_issued = Serial::random()?;
    for (name, serial) in [
        ("good", &signature.serial),
        ("revoked", &revoked.serial),
        ("held", &held.serial),
        ("unknown", &never_issued),
    ] {
        let nonce = Serial::random()?;
        let req = build_request(
            &sub_cert,
            std::slice::from_ref(serial),
            CertIdHash::Sha1,
            Some(nonce.as_be_bytes()),
        )?;
        let answer = ocsp.respond(&req, &index, now);
        write(&format!("ocsp-{name}.req.der"), &req)?;
        write(&format!("ocsp-{name}.der"), &answer.der)?;
    }
    Ok(())
}
