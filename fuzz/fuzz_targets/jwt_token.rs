#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ticketgate::fuzzing::jwt_token(data));
