//! The bundle manifest parser (`bundle.toml`): parsed and validated, or refused with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitnets_proto::bundle::Manifest;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(m) = Manifest::parse(text)
    {
        assert!(m.validate().is_ok());
    }
});
