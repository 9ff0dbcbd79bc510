#![no_main]
// The body is scalehook_fuzz::service (src/lib.rs), shared with the plain corpus test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| scalehook_fuzz::service(data));
