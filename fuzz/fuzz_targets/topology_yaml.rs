//! The lab's topology loader: any text, as a user may write it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netaware_lab::topology::Topology;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Topology::parse(text, "fuzz");
    }
});
