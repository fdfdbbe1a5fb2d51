//! A config file: TOML, `${VAR}` expansion, typed values, validation, and
//! the `--check` round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    drainit_fuzz::check_config(text);
});
