//! Fuzz target: see `kapal_mesh::fuzzing::config_parsing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kapal_mesh::fuzzing::config_parsing(data));
