#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ticketgate::fuzzing::refresh_body(data));
