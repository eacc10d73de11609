//! # chop-controller
//!
//! Reconciles chop.dev resources: reads a custom resource, asks the `ca` core to
//! compute, writes the outcome to status by server-side apply (one field manager,
//! `chop-controller`; officers own `Approved`/`Denied`). The binary
//! (`src/main.rs`) is a thin shell over this library: leader election, then
//! [`run`].
//!
//! ## Never issue twice
//! Each reconcile starts from a fresh read of its object (reconciles of one
//! object are serialised and only the Lease holder writes, so the read includes
//! every earlier write). A CertificateRequest's serial, validity and subscriber
//! identifier are reserved in its status, conditional on the resourceVersion
//! read, *before* the HSM signs; the TBSCertificate is a pure function of them
//! and RSA PKCS#1 v1.5 is deterministic. Creating the `IssuedCertificate`
//! (`<ca>-<serial>`) is the commit point; the request's status follows. After a
//! crash: a reserved serial with a record is copied into status (no signing); a
//! reserved serial without one is signed again, giving the same certificate.
//! Roots and parent-signed subordinates follow the same pattern.
//!
//! ## Permissions the controller needs
//! `get` Secrets (PINs); `get/create/patch` Secrets `<ca>-ocsp-responder`,
//! ServiceAccounts, Services, Deployments, Roles and RoleBindings (the responder
//! workload, [`reconcilers::responder`]); `bind` the ClusterRole
//! `chop:responder` only; `get/create/update` ConfigMaps (`<ca>-subscribers-<shard>`);
//! `get/list/patch/delete` ConfigMaps (CRL publication, [`publish`]);
//! `list/watch` CRLSchedules, `patch` their `status`;
//! `get/list/watch` CertificateAuthorities, CertificateRequests,
//! IssuedCertificates, Revocations, Suspensions; `patch` their `status`;
//! `create` IssuedCertificates; `list` IssuedCertificates by label selector and
//! `patch` them (labels and annotations: `chop.dev/status`,
//! `chop.dev/revoked-by`, `chop.dev/held-by`, `chop.dev/request`); `delete`
//! finished CertificateRequests after `--request-retention` ([`gc`]); `patch` Suspensions (finalizer);
//! `create/patch` events.k8s.io Events; `get/create/update` Leases; `approve`
//! on `signers` (auto-approval, checked by the chop-approval admission policy).
//! A renewal claims its original with the annotation `chop.dev/renewed-by` on
//! the original's IssuedCertificate ([`renewal`]).
//!
//! ## Not in this slice
//! Key ceremonies (keys are generated with `keyGeneration: IfMissing` or must
//! already be on the token).
//!
//! ## Revocation and suspension
//! A [`Revocation`](reconcilers::revocation) fixes its time in its own status,
//! then marks every record of the key pair (CPS §4.6.2, §6.3); a
//! [`Suspension`](reconcilers::suspension) holds one certificate until resumed
//! or deleted. Both write the IssuedCertificate's status, the single source of
//! the CRL's and OCSP's status (§7.3).
//!
//! ## CRLs
//! See [`reconcilers::crl_schedule`] (numbers reserved before signing, ADR 0002
//! §3) and [`publish`] (chunked ConfigMaps, ADR 0002 §4).

pub mod archive;
pub mod audit;
pub mod blocklist;
pub mod conditions;
pub mod context;
pub mod error;
pub mod gc;
pub mod leader;
pub mod malformed;
pub mod metrics;
/// CRL publication as chunked ConfigMaps: shared with chop-responder (`chop-register`).
pub use chop_register::publish;
pub mod reconcilers;
pub mod record_index;
pub mod register;
pub mod renewal;
pub mod subscribers;

use std::sync::Arc;
use std::time::Duration;

use crds::{CertificateAuthority, CertificateRequest, IssuedCertificate};
use futures::StreamExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::malformed::Guarded;
use crate::reconcilers::{certificate_authority as ca_rec, certificate_request as cr_rec};

/// Run the CertificateAuthority, CertificateRequest, Revocation, Suspension
/// and CRLSchedule controllers until their streams end (on shutdown).
/// `namespace`: watch one namespace, or all.
///
/// Every watch of a chop kind reads [`Guarded`] objects, so one object that no
/// longer deserializes is reported on itself and blinds nothing else (see
/// [`malformed`]); the IssuedCertificate watches read metadata only, which the
/// API server validates.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    let client = ctx.client.clone();
    let (cas, crs): (
        Api<Guarded<CertificateAuthority>>,
        Api<Guarded<CertificateRequest>>,
    ) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    // The register by metadata-only watch into the compact record index
    // (record_index.rs: name, CA, state): the CA counts issued, revoked and
    // held certificates from it without listing the API, and each new record
    // triggers its CA's reconcile (debounced, so a burst of issuance is one
    // recount, not one per certificate).
    let issued: Api<PartialObjectMeta<IssuedCertificate>> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let index = ctx.records.clone();
    let record_events = watcher(
        issued,
        watcher::Config::default().labels(crds::issued_certificate::LABEL_CA),
    )
    .default_backoff()
    .map(move |event| {
        if let Ok(e) = &event {
            index.apply(e);
        }
        event
    })
    .touched_objects();
    let ceremonies: Api<Guarded<crds::KeyCeremony>> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let ca_controller = Controller::new(cas.clone(), watcher::Config::default())
        .with_config(controller::Config::default().debounce(Duration::from_secs(1)))
        .watches_stream(record_events, |ic: PartialObjectMeta<IssuedCertificate>| {
            let ns = ic.metadata.namespace.clone().unwrap_or_default();
            ic.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crds::issued_certificate::LABEL_CA))
                .map(|ca| ObjectRef::<Guarded<CertificateAuthority>>::new(ca).within(&ns))
        })
        // A ceremony's progress (Generate succeeded, Activate after a PIN
        // lock-out, Destroy) is news for its CA.
        .watches(
            ceremonies,
            watcher::Config::default(),
            |kc: Guarded<crds::KeyCeremony>| {
                let ns = kc.namespace()?;
                malformed::valid(&kc).map(|kc| {
                    ObjectRef::<Guarded<CertificateAuthority>>::new(&kc.spec.ca_ref.name)
                        .within(&ns)
                })
            },
        )
        .run(
            malformed::reconcile(ca_rec::reconcile),
            malformed::error_policy(ca_rec::error_policy),
            Arc::clone(&ctx),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "CertificateAuthority controller event");
            }
        });
    let cr_controller = Controller::new(crs, watcher::Config::default());
    let store = cr_controller.store();
    // Finished requests are collected from the same watch cache (gc.rs).
    let gc = ctx
        .request_retention
        .map(|r| tokio::spawn(gc::run(Arc::clone(&ctx), store.clone(), r)));
    // The CAs in memory: requests read their CA from here instead of from the
    // API server. A CA change that can unblock a request (spec, Ready, its
    // certificate) re-examines that CA's requests still without a certificate;
    // its counters (which change with every issuance) do not.
    let (ca_store, ca_writer) = reflector::store::<Guarded<CertificateAuthority>>();
    ctx.set_cas(ca_store);
    let ca_events = watcher(cas, watcher::Config::default())
        .default_backoff()
        .reflect(ca_writer)
        .touched_objects()
        .predicate_filter(
            malformed::predicate(ca_rec::signing_state),
            PredicateConfig::default(),
        );
    let cr_controller = cr_controller
        .watches_stream(ca_events, move |ca: Guarded<CertificateAuthority>| {
            let ns = ca.namespace();
            let name = ca.name_any();
            store
                .state()
                .into_iter()
                .filter(|g| {
                    malformed::valid(g.as_ref()).is_some_and(|cr| {
                        cr.metadata.namespace == ns
                            && cr.spec.ca_ref.name == name
                            && cr.status.as_ref().is_none_or(|s| s.certificate.is_none())
                    })
                })
                .map(|cr| ObjectRef::from_obj(cr.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(
            malformed::reconcile(cr_rec::reconcile),
            malformed::error_policy(cr_rec::error_policy),
            Arc::clone(&ctx),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "CertificateRequest controller event");
            }
        });
    tokio::join!(
        ca_controller,
        cr_controller,
        reconcilers::revocation::run(Arc::clone(&ctx), namespace),
        reconcilers::suspension::run(Arc::clone(&ctx), namespace),
        reconcilers::crl_schedule::run(Arc::clone(&ctx), namespace),
        reconcilers::key_ceremony::run(Arc::clone(&ctx), namespace),
    );
    if let Some(gc) = gc {
        gc.abort();
    }
}
