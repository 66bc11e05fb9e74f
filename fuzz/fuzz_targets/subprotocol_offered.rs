#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ticketgate::fuzzing::subprotocol_offered(data));
