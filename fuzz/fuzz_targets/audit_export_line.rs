#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| panvault_fuzz::audit_export_line(data));
