-- chop's PostgreSQL register, version 1 (issue 12). Applied once, in one
-- transaction, by chop_register::postgres::migrate; never edited after release:
-- a change is a new file 0002_*.sql.
--
-- Three tables, after Boulder's split between what is reserved, what was signed
-- and what its status is:
--   reservations  one serial per CertificateRequest, written BEFORE the HSM signs
--                 (a crash after signing re-signs the same serial, never a new one)
--   certificates  the DER, written once per reservation (the commit point)
--   status        the certificate's state, the row OCSP and CRLs read; changed in
--                 place by conditional UPDATEs (revoked is final)

CREATE TABLE reservations (
    ca          text        NOT NULL,
    serial      bytea       NOT NULL,
    -- The CertificateRequest: namespace/name/uid. One serial per request.
    request     text        NOT NULL UNIQUE,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ca, serial)
);

CREATE TABLE certificates (
    ca              text        NOT NULL,
    serial          bytea       NOT NULL,
    -- One per request already: the request's one reservation (its UNIQUE) and
    -- one certificate per reservation (the primary key). No second index here.
    request         text        NOT NULL,
    -- The subscriber reference (CPS §9.4), never a national identity number.
    subscriber      text        NOT NULL,
    -- SHA-256 of the subject public key info: renewal, re-key, key block list.
    key_fingerprint bytea       NOT NULL,
    not_before      timestamptz NOT NULL,
    not_after       timestamptz NOT NULL,
    partition       integer,
    der             bytea       NOT NULL,
    issued_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ca, serial),
    FOREIGN KEY (ca, serial) REFERENCES reservations (ca, serial)
);
CREATE INDEX certificates_key_fingerprint ON certificates (key_fingerprint);
CREATE INDEX certificates_subscriber ON certificates (ca, subscriber);

-- state: 0 valid, 1 held (certificateHold), 2 revoked. reason: RFC 5280 §5.3.1 code.
CREATE TABLE status (
    ca          text        NOT NULL,
    serial      bytea       NOT NULL,
    state       smallint    NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2)),
    reason      smallint,
    revoked_at  timestamptz,
    invalidity  timestamptz,
    not_after   timestamptz NOT NULL,
    partition   integer,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ca, serial),
    FOREIGN KEY (ca, serial) REFERENCES certificates (ca, serial),
    CHECK ((state = 0) = (revoked_at IS NULL))
);
-- CRL building: the entries of one CA (and partition) that are not valid; a
-- partial index stays as small as the CRL, whatever the register's size.
CREATE INDEX status_crl ON status (ca, partition, serial) WHERE state <> 0;
-- Expiry and archive (CPS §5.5): notAfter grows with insertion order (issuance
-- time + a fixed validity), so a BRIN index serves the range scans at a
-- fraction of a B-tree's size and insert cost.
CREATE INDEX status_expiry ON status USING brin (not_after);

-- Responders follow status changes: one notification per change, payload
-- "<ca> <serial hex> <state>" (LISTEN chop_register_status).
CREATE FUNCTION chop_status_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('chop_register_status',
        NEW.ca || ' ' || encode(NEW.serial, 'hex') || ' ' || NEW.state);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER status_notify AFTER INSERT OR UPDATE ON status
    FOR EACH ROW EXECUTE FUNCTION chop_status_notify();
