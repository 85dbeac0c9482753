//! Fuzz target: see `kapal_mesh::fuzzing::protocol_detection`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kapal_mesh::fuzzing::protocol_detection(data));
