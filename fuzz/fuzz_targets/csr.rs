//! PKCS#10 requests and bare SubjectPublicKeyInfo from an RA.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ca::fuzzing::csr(data));
