//! What the aggregator does with a message off the wire (`splitnets_proto::untrusted`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| splitnets_proto::untrusted::message(bytes));
