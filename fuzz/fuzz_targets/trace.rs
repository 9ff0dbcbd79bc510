#![no_main]
// The body is scalehook_fuzz::trace (src/lib.rs), shared with the plain corpus test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| scalehook_fuzz::trace(data));
