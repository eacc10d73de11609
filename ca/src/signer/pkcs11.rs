//! PKCS#11 signer (see issue 2). Filled in by the HSM work.
