//! `lastmile_core::format::from_bytes` on arbitrary bytes: must return `Ok` or `Err`, never
//! panic; whatever it accepts must re-encode, and decoding that must give the same model and
//! the same bytes again.
#![no_main]

use lastmile_core::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = format::from_bytes(data) {
        let bytes = model.to_bytes().expect("an accepted model re-encodes");
        let again = format::from_bytes(&bytes).expect("a re-encoded model decodes");
        assert_eq!(again, model);
        assert_eq!(again.to_bytes().expect("re-encodes"), bytes);
    }
});
