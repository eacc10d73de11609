//! Issuance benchmark: the full issuance path next to the raw SoftHSM2 signing
//! rate, measured side by side in one run.
//!
//! ```sh
//! cargo run --release -p ca --example bench_issue -- [CERTS_PER_ROUND]
//! ```
//!
//! "Full path" is what the operator does per certificate: parse the PKCS#10
//! request, verify its signature, build the TBSCertificate, sign it with the
//! throwaway key, lint it, sign it with the CA key in the HSM, and verify that
//! signature. "Raw" is `C_Sign` of a message of the same size through the same
//! signer. Rounds alternate raw/full so that load from elsewhere hits both alike;
//! each figure is the median over rounds. Target (issue 2): full ≥ 50% of raw.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ca::csr::{SubjectKey, build_csr};
use ca::issue::{CaConfig, IssuanceRequest, Issuer, RootRequest, self_sign_root};
use ca::name::DistinguishedName;
use ca::profile::Profile;
use ca::serial::Serial;
use ca::signer::pkcs11::KeyRef;
use ca::signer::software::SoftwareKey;
use ca::signer::{KeySpec, Signer};
use der::{Decode, Encode};
use x509_cert::Certificate;

const ROUNDS: usize = 5;

fn main() -> Result<(), BoxError> {
    if let Some(status) = ca::softhsm::with_private_token_dir()? {
        std::process::exit(status.code().unwrap_or(1));
    }
    let per_round: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(400);

    let token = ca::softhsm::TestToken::new()?;
    let t = token.open()?;
    t.generate_key("bench-ca", None, KeySpec::Rsa { bits: 2048 })?;
    let signer: Arc<dyn Signer> = Arc::new(t.signer(&KeyRef::label("bench-ca"))?);
    let ca_dn = DistinguishedName::parse("C=TW, O=行政院, OU=內政部憑證管理中心")?;
    let root = self_sign_root(signer.as_ref(), &RootRequest::new(&ca_dn)?)?;
    let mut config = CaConfig::new(Certificate::from_der(&root.der)?, signer.clone());
    config.crl_urls = vec!["http://repository.example.tw/crl/moica.crl".into()];
    config.ocsp_urls = vec!["http://ocsp.example.tw/".into()];
    let issuer = Issuer::new(config)?;

    // Subscriber requests are made client-side, before timing: 16 RSA-2048 keys,
    // reused round-robin (parsing and verifying the CSR is still done per certificate).
    let mut csrs = Vec::new();
    for i in 0..16 {
        let key = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 })?;
        let dn = DistinguishedName::parse(&format!("C=TW, CN=測試{i}"))?;
        csrs.push(build_csr(&key, &dn.to_name()?)?);
    }
    let subject = DistinguishedName::subscriber("TW", "王小明", "X0000000001")?;
    let message = issuer.certificate().tbs_certificate.to_der()?;

    println!(
        "issuance benchmark: {per_round} certificates per round, {ROUNDS} rounds, RSA-2048 CA key in SoftHSM2"
    );
    let mut table = Vec::new();
    for threads in [1usize, 2] {
        let mut raw = Vec::new();
        let mut full = Vec::new();
        for _ in 0..ROUNDS {
            raw.push(rate(per_round, threads, |_| {
                signer.sign(&message)?;
                Ok(())
            })?);
            full.push(rate(per_round, threads, |i| {
                let key = SubjectKey::from_csr(&csrs[i % csrs.len()])?;
                let req = IssuanceRequest::new(
                    Profile::subscriber_signature(),
                    &subject,
                    key,
                    Serial::random()?,
                )?;
                issuer.issue(&req)?;
                Ok(())
            })?);
        }
        table.push((threads, median(&mut raw), median(&mut full)));
    }
    println!(
        "{:>8} {:>16} {:>16} {:>8}  target",
        "threads", "raw HSM sig/s", "full path cert/s", "ratio"
    );
    let mut pass = true;
    for (threads, raw, full) in table {
        let ratio = full / raw;
        let ok = ratio >= 0.5;
        pass &= ok;
        println!(
            "{threads:>8} {raw:>16.0} {full:>16.0} {ratio:>8.2}  >= 0.50 {}",
            if ok { "PASS" } else { "FAIL" }
        );
    }
    println!("issuance: {}", if pass { "PASS" } else { "FAIL" });
    Ok(())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Operations per second of `op` run `n` times over `threads` threads.
fn rate(
    n: usize,
    threads: usize,
    op: impl Fn(usize) -> Result<(), BoxError> + Sync,
) -> Result<f64, BoxError> {
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                s.spawn(move || -> Result<(), BoxError> {
                    for i in (t..n).step_by(threads) {
                        op(i)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "benchmark thread panicked")??;
        }
        Ok::<(), BoxError>(())
    })?;
    let secs = start.elapsed().max(Duration::from_micros(1)).as_secs_f64();
    Ok(n as f64 / secs)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
