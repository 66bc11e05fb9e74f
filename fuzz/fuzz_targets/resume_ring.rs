#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ticketgate::fuzzing::resume_ring(data));
