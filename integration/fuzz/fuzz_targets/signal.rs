//! Signal names and numbers (`TERM`, `SIGTERM`, `15`, `RTMIN+3`) and
//! `-r FROM:TO` rewrite specs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    drainit_fuzz::check_signal(s);
    if let Ok(n) = s.trim().parse::<i64>() {
        drainit_fuzz::check_signal_number(n);
    }
});
