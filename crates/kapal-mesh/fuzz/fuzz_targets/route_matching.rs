//! Fuzz target: see `kapal_mesh::fuzzing::route_matching`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kapal_mesh::fuzzing::route_matching(data));
