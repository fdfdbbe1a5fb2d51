//! Duration strings (humantime) and the printing of any duration value.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        drainit_fuzz::check_duration(s);
    }
    if let Some((secs, nanos)) = data.split_first_chunk::<8>().and_then(|(secs, rest)| {
        Some((
            u64::from_le_bytes(*secs),
            u32::from_le_bytes(*rest.first_chunk::<4>()?),
        ))
    }) {
        drainit_fuzz::check_duration_value(Duration::new(secs, nanos % 1_000_000_000));
    }
});
