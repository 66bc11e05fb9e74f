#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ticketgate::fuzzing::h2_headers(data));
