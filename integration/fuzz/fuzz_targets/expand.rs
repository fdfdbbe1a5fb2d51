//! `${VAR}`, `${VAR:-default}` and `$${` expansion, and its escape.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    drainit_fuzz::check_expand(s);
});
