#!/usr/bin/env python3
"""Build the weak RSA public keys of controller/tests/attacks_keys.rs (no private
key is kept; the primes are ours, computed here, deterministic):

- rsa-fermat.pub.pem: n = p*q with q the prime after p (Fermat's method factors
  it in one round).
- rsa-roca.pub.pem: p, q of the form k*M + (65537^a mod M), M the primorial of
  the first 126 primes (the structure of Infineon RSALib 2048-bit keys,
  CVE-2017-15361), so n has the ROCA fingerprint.
- ec-p521-off-curve.pub.pem: written by the test from a real P-521 key with y
  changed (not here).

Run: python3 weak_keys.py  (writes the PEM files next to this script).
"""
import base64
import hashlib
import os

SMALL = [p for p in range(2, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def probable_prime(n):
    if n < 2:
        return False
    for p in SMALL[:20]:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in SMALL[:20]:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def next_prime(n):
    n |= 1
    while not probable_prime(n):
        n += 2
    return n


def start_1024(seed):
    out, block = b"", bytes([seed]) * 32
    while len(out) < 128:
        block = hashlib.sha256(block).digest()
        out += block
    return int.from_bytes(out[:128], "big") | (3 << 1022)


def der_len(n):
    if n < 128:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def der(tag, body):
    return bytes([tag]) + der_len(len(body)) + body


def der_int(v):
    b = v.to_bytes(v.bit_length() // 8 + 1, "big")
    return der(0x02, b)


def spki_pem(n, e=65537):
    rsa_key = der(0x30, der_int(n) + der_int(e))
    alg = der(0x30, der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
    spki = der(0x30, alg + der(0x03, b"\x00" + rsa_key))
    b64 = base64.b64encode(spki).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


def roca_prime(m, a, bits):
    g = pow(65537, a, m)
    k = (1 << (bits - m.bit_length())) + a
    while not probable_prime(k * m + g):
        k += 1
    return k * m + g


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = next_prime(start_1024(41))
    q = next_prime(p + 1)
    with open(os.path.join(here, "rsa-fermat.pub.pem"), "w") as f:
        f.write(spki_pem(p * q))
    m = 1
    for r in SMALL[:126]:
        m *= r
    n = roca_prime(m, 1_000_003, 1024) * roca_prime(m, 7_777_777, 1024)
    assert n.bit_length() >= 2047
    with open(os.path.join(here, "rsa-roca.pub.pem"), "w") as f:
        f.write(spki_pem(n))


if __name__ == "__main__":
    main()
