#!/usr/bin/env python3
"""An example registration authority (RA) client for chop.

It does a whole journey with the official Kubernetes Python client, as a
ServiceAccount (or any user) bound to the ClusterRole chop:registration-authority
in the CA's namespace (docs/ra-integration.md):

  1. create a CertificateRequest (idempotent by name: if it exists with the same
     spec that is success; with a different spec, an error);
  2. follow it by watch until Issued, Denied, Failed or Lapsed, printing each
     condition's reason and message as it changes;
  3. write the certificate and the CA chain (PEM) to files;
  4. optionally request a revocation and/or a suspension of that certificate
     (each idempotent by name) and follow it by watch until it is applied.

Exit codes (also printed on stderr with a message):
  0  done
  1  bad arguments or unreadable input (kubeconfig, CSR file)
  2  an object of that name exists with a different spec (pick another name)
  3  an officer denied the request
  4  the CA refused the request (Failed=True: bad CSR, weak key, ...)
  5  the request lapsed: not accepted within the CA's acceptanceDays
  6  timed out following an object (it may still complete: run again)
  7  the API server refused a call (missing RBAC, admission policy, ...)
  8  the CA refused the revocation or suspension (unknown serial, already held, ...)

Re-running the same command is safe: nothing is created twice.
"""

import argparse
import json
import random
import sys
import time

import urllib3

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

GROUP = "chop.dev"
VERSION = "v1alpha1"
REQUESTED_BY = "chop.dev/requested-by"

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_CONFLICT = 2
EXIT_DENIED = 3
EXIT_FAILED = 4
EXIT_LAPSED = 5
EXIT_TIMEOUT = 6
EXIT_API = 7
EXIT_REFUSED = 8

# Reasons with which a Revocation (Applied=False) or Suspension (Held=False)
# is refused for good: bad input that a retry does not fix. The others
# (RequestNotFound, NotIssued, Applying, WaitingForRenewal) are waits.
REVOCATION_REFUSALS = {"UnknownSerial"}
SUSPENSION_REFUSALS = {"UnknownSerial", "AlreadyHeld", "Revoked", "Expired"}


class Stop(Exception):
    """Ends the journey with an exit code and a message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def log(message):
    print(message, flush=True)


def api_error(what, e):
    """A Stop for an ApiException, with the API server's own message."""
    detail = e.reason
    try:
        detail = json.loads(e.body).get("message", detail)
    except Exception:  # noqa: BLE001 - the body is not always JSON
        pass
    return Stop(EXIT_API, f"{what}: HTTP {e.status}: {detail}")


# Answers worth retrying: throttled or a server-side hiccup. 403 (RBAC) and
# 422 (an admission policy's refusal) are not: the message says what to fix.
RETRIABLE = {429, 500, 502, 503, 504}


def retrying(what, call, budget=60.0):
    """Run `call()`, retrying network errors and RETRIABLE answers with
    exponential backoff (1 s doubling to 30 s, jittered, Retry-After honoured)
    for at most `budget` seconds. Safe because every create is idempotent by name."""
    deadline = time.monotonic() + budget
    delay = 1.0
    while True:
        try:
            return call()
        except ApiException as e:
            if e.status not in RETRIABLE:
                raise
            retry_after = (e.headers or {}).get("Retry-After")
            wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
            error = f"HTTP {e.status}"
        except (urllib3.exceptions.HTTPError, OSError) as e:
            wait, error = delay, str(e)
        if time.monotonic() + wait > deadline:
            raise Stop(EXIT_TIMEOUT, f"{what}: still failing after {budget:.0f}s: {error}")
        log(f"{what}: {error}; retrying in {wait:.1f}s")
        time.sleep(wait * random.uniform(0.8, 1.2))
        delay = min(delay * 2, 30.0)


def conditions(obj):
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def whoami():
    """The authenticated user name (SelfSubjectReview), or None if unavailable."""
    try:
        review = client.AuthenticationV1Api().create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        return review.status.user_info.username
    except Exception:  # noqa: BLE001 - older servers: the admission policy records it anyway
        return None


class Objects:
    """One kind of chop object in one namespace."""

    def __init__(self, namespace, plural, kind):
        self.api = client.CustomObjectsApi()
        self.namespace = namespace
        self.plural = plural
        self.kind = kind

    def get(self, name):
        return retrying(
            f"reading {self.kind} {name}",
            lambda: self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, self.plural, name
            ),
        )

    def create_idempotent(self, name, spec, same, annotations=None):
        """Create `name` with `spec`; if it exists, `same(existing_spec)` decides
        whether that is the object we meant (success) or a conflict (Stop)."""
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": self.kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        if annotations:
            body["metadata"]["annotations"] = annotations
        try:
            obj = retrying(
                f"creating {self.kind} {name}",
                lambda: self.api.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, self.plural, body
                ),
            )
            log(f"{self.kind} {name}: created")
            return obj
        except ApiException as e:
            if e.status != 409:
                raise api_error(f"creating {self.kind} {name}", e) from e
        try:
            obj = self.get(name)
        except ApiException as e:
            raise api_error(f"reading {self.kind} {name}", e) from e
        if not same(obj.get("spec") or {}):
            raise Stop(
                EXIT_CONFLICT,
                f"{self.kind} {name} already exists with a different spec; "
                "an existing request is never changed: choose a new name",
            )
        log(f"{self.kind} {name}: already exists with this spec, following it")
        return obj

    def follow(self, name, decide, timeout):
        """Watch `name` until `decide(obj)` returns a result (not None); print
        every change of condition. Restarts the watch when it ends or expires."""
        deadline = time.monotonic() + timeout
        seen = {}
        try:
            obj = self.get(name)
        except ApiException as e:
            raise api_error(f"reading {self.kind} {name}", e) from e
        while True:
            for c in conditions(obj).values():
                key = (c.get("type"), c.get("status"), c.get("reason"))
                if seen.get(c.get("type")) != key:
                    seen[c.get("type")] = key
                    log(
                        f"{self.kind} {name}: {c.get('type')}={c.get('status')} "
                        f"{c.get('reason')}: {c.get('message', '')}"
                    )
            result = decide(obj)
            if result is not None:
                return result, obj
            left = deadline - time.monotonic()
            if left <= 0:
                raise Stop(
                    EXIT_TIMEOUT,
                    f"timed out after {timeout}s following {self.kind} {name}; "
                    "it may still complete: run the same command again",
                )
            rv = obj["metadata"]["resourceVersion"]
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    self.plural,
                    field_selector=f"metadata.name={name}",
                    resource_version=rv,
                    timeout_seconds=max(1, min(int(left), 60)),
                ):
                    if event["type"] == "ERROR":
                        # e.g. 410 Gone delivered as an event: read again below.
                        obj = self.get(name)
                        w.stop()
                        break
                    if event["type"] == "DELETED":
                        raise Stop(EXIT_API, f"{self.kind} {name} was deleted")
                    if event["type"] in ("ADDED", "MODIFIED"):
                        obj = event["object"]
                        w.stop()
            except ApiException as e:
                if e.status == 410 or e.status in RETRIABLE:
                    # The resourceVersion is too old, or the server hiccuped:
                    # read again, watch again.
                    obj = self.get(name)
                    continue
                raise api_error(f"watching {self.kind} {name}", e) from e
            except (urllib3.exceptions.HTTPError, OSError) as e:
                log(f"watching {self.kind} {name}: {e}; reading again")
                time.sleep(1)
                obj = self.get(name)
            # The watch ended (an event, or its timeout): loop decides again.


def request_spec(args):
    with open(args.csr, encoding="ascii") as f:
        csr = f.read()
    spec = {
        "caRef": {"name": args.ca},
        "profile": args.profile,
        "subscriber": {"reference": args.reference, "commonName": args.common_name},
        "csr": csr,
        "accepted": args.accepted,
    }
    if args.email:
        spec["email"] = args.email
        spec["emailVerified"] = True
    return spec


def same_request(want):
    """Same request: every field but `accepted`, which only ever goes to true."""

    def same(have):
        keys = set(want) | set(have)
        for k in keys - {"accepted", "emailVerified"}:
            a, b = want.get(k), have.get(k)
            if k == "csr" and a and b:
                a, b = a.strip(), b.strip()
            if a != b:
                return False
        return want.get("emailVerified", False) == have.get("emailVerified", False)

    return same


def issued_outcome(obj):
    conds = conditions(obj)
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")

    def true(t):
        return conds.get(t, {}).get("status") == "True"

    if status.get("certificate") and true("Issued"):
        return "Issued"
    if true("Denied"):
        return "Denied"
    failed = conds.get("Failed", {})
    if failed.get("status") == "True" and failed.get("observedGeneration", generation) == generation:
        return "Failed"
    if true("Lapsed"):
        return "Lapsed"
    return None


def journey(args):
    ns = args.namespace
    requests = Objects(ns, "certificaterequests", "CertificateRequest")
    spec = request_spec(args)  # a bad CSR path fails before any API call
    user = whoami()
    if user:
        log(f"acting as {user}")
    # The chop-requested-by admission policy records the creator itself; a
    # cluster without it needs the client to say who it is (docs/ra-integration.md).
    annotations = {REQUESTED_BY: user} if user else None
    requests.create_idempotent(args.name, spec, same_request(spec), annotations)
    if args.accepted:
        current = requests.get(args.name)
        if not (current.get("spec") or {}).get("accepted"):
            # The applicant accepted after an earlier run created it unaccepted.
            try:
                retrying(
                    f"accepting CertificateRequest {args.name}",
                    lambda: requests.api.patch_namespaced_custom_object(
                        GROUP, VERSION, ns, "certificaterequests", args.name,
                        {"spec": {"accepted": True}},
                    ),
                )
                log(f"CertificateRequest {args.name}: accepted by the applicant")
            except ApiException as e:
                raise api_error(f"accepting CertificateRequest {args.name}", e) from e

    outcome, obj = requests.follow(args.name, issued_outcome, args.timeout)
    conds = conditions(obj)
    if outcome == "Denied":
        c = conds["Denied"]
        raise Stop(EXIT_DENIED, f"denied: {c.get('reason')}: {c.get('message', '')}")
    if outcome == "Failed":
        c = conds["Failed"]
        raise Stop(
            EXIT_FAILED,
            f"the CA refused the request: {c.get('reason')}: {c.get('message', '')}; "
            "fix the input and submit a new request under a new name",
        )
    if outcome == "Lapsed":
        c = conds["Lapsed"]
        raise Stop(EXIT_LAPSED, f"lapsed: {c.get('reason')}: {c.get('message', '')}")

    status = obj["status"]
    serial = status.get("serialNumber")
    with open(args.cert_out, "w", encoding="ascii") as f:
        f.write(status["certificate"])
    with open(args.chain_out, "w", encoding="ascii") as f:
        f.write(status.get("chain") or "")
    log(
        f"issued: serial {serial}, subscriber {status.get('subscriberId')}, "
        f"valid until {status.get('notAfter')}; certificate in {args.cert_out}, "
        f"chain in {args.chain_out}"
    )

    if args.suspend:
        holds = Objects(ns, "suspensions", "Suspension")
        hold_spec = {
            "caRef": {"name": args.ca},
            "certificateRequestRef": {"name": args.name},
            "requester": args.requester,
            "resumed": False,
        }
        hold_name = f"{args.name}-hold"
        holds.create_idempotent(
            hold_name,
            hold_spec,
            lambda have: {k: have.get(k) for k in ("caRef", "certificateRequestRef", "requester")}
            == {k: hold_spec[k] for k in ("caRef", "certificateRequestRef", "requester")},
        )

        def held(o):
            c = conditions(o).get("Held", {})
            state = (o.get("status") or {}).get("state")
            if c.get("status") == "True" or state in ("Held", "Resumed", "Superseded"):
                return state or "Held"
            if c.get("status") == "False" and c.get("reason") in SUSPENSION_REFUSALS:
                return "Refused"
            return None

        state, o = holds.follow(hold_name, held, args.timeout)
        if state == "Refused":
            c = conditions(o)["Held"]
            raise Stop(EXIT_REFUSED, f"hold refused: {c.get('reason')}: {c.get('message', '')}")
        log(f"Suspension {hold_name}: {state}")

    if args.revoke:
        revocations = Objects(ns, "revocations", "Revocation")
        rev_spec = {
            "caRef": {"name": args.ca},
            "certificateRequestRef": {"name": args.name},
            "reason": args.revoke,
            "requester": args.requester,
        }
        rev_name = f"{args.name}-revocation"
        revocations.create_idempotent(
            rev_name,
            rev_spec,
            lambda have: {k: have.get(k) for k in rev_spec} == rev_spec,
        )

        def applied(o):
            c = conditions(o).get("Applied", {})
            if c.get("status") == "True":
                return "Applied"
            if c.get("status") == "False" and c.get("reason") in REVOCATION_REFUSALS:
                return "Refused"
            return None

        outcome, o = revocations.follow(rev_name, applied, args.timeout)
        if outcome == "Refused":
            c = conditions(o)["Applied"]
            raise Stop(
                EXIT_REFUSED, f"revocation refused: {c.get('reason')}: {c.get('message', '')}"
            )
        st = o.get("status") or {}
        log(
            f"revoked at {st.get('revokedAt')}: {', '.join(st.get('serialNumbers') or [])} "
            f"(newly: {', '.join(st.get('newlyRevoked') or []) or 'none'})"
        )
    return EXIT_OK


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Request a certificate from a chop CA as a registration authority, "
        "follow it to the end, save it, and optionally revoke or suspend it.",
        epilog="Exit codes: 0 done, 1 usage, 2 name taken by a different spec, 3 denied, "
        "4 failed, 5 lapsed, 6 timeout, 7 API refusal, 8 revocation/suspension refused.",
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then in-cluster)")
    p.add_argument("--namespace", "-n", required=True, help="the CA's namespace")
    p.add_argument("--ca", required=True, help="CertificateAuthority name")
    p.add_argument("--name", required=True, help="CertificateRequest name (the idempotency key)")
    p.add_argument(
        "--profile",
        default="Signature",
        choices=["Signature", "Encryption", "MobileSignature"],
    )
    p.add_argument("--reference", required=True, help="the RA's opaque subscriber reference (never a national ID)")
    p.add_argument("--common-name", required=True, help="the subscriber's name as in the certificate")
    p.add_argument("--csr", required=True, help="PKCS#10 request (PEM file)")
    p.add_argument("--email", help="a verified e-mail address to include")
    p.add_argument(
        "--accepted",
        action="store_true",
        help="the applicant has reviewed the subject and accepts (CPS 4.4); without it issuance waits",
    )
    p.add_argument("--cert-out", default="certificate.pem")
    p.add_argument("--chain-out", default="chain.pem")
    p.add_argument(
        "--revoke",
        metavar="REASON",
        choices=[
            "unspecified",
            "keyCompromise",
            "affiliationChanged",
            "superseded",
            "cessationOfOperation",
            "privilegeWithdrawn",
        ],
        help="after issuance, revoke with this RFC 5280 reason (Revocation <name>-revocation)",
    )
    p.add_argument("--suspend", action="store_true", help="after issuance, put the certificate on hold (Suspension <name>-hold)")
    p.add_argument(
        "--requester",
        default="RegistrationAuthority",
        choices=["Subscriber", "RegistrationAuthority"],
        help="who asked for the revocation or hold (CPS 4.9.2, 4.9.14)",
    )
    p.add_argument("--timeout", type=int, default=300, help="seconds to follow each object")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.kubeconfig:
            config.load_kube_config(config_file=args.kubeconfig)
        else:
            try:
                config.load_kube_config()
            except config.ConfigException:
                config.load_incluster_config()
    except Exception as e:  # noqa: BLE001 - any unusable configuration
        print(f"ra_client: cannot load a Kubernetes configuration: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return journey(args)
    except Stop as s:
        print(f"ra_client: {s.message}", file=sys.stderr)
        return s.code
    except ApiException as e:
        s = api_error("API call", e)
        print(f"ra_client: {s.message}", file=sys.stderr)
        return s.code
    except OSError as e:
        print(f"ra_client: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
