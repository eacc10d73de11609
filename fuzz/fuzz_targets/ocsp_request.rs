//! OCSP requests (POST bodies and GET paths) through the whole responder.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ca::fuzzing::ocsp_request(data));
