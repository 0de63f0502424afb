//! `lastmile_data::read_idx_bytes` on arbitrary bytes (raw idx or gzip): must return `Ok` or
//! `Err`, never panic, and an accepted array must be self-consistent.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = lastmile_data::read_idx_bytes(data, Path::new("fuzz.idx")) {
        assert_eq!(a.dims.iter().product::<usize>(), a.data.len());
    }
});
