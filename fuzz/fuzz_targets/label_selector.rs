//! Place's label selector, as any query client sends it: parsed, and a
//! parsed one applied to a Node's labels.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use netaware_aggregator::selector;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(filter) = selector::filter(text) {
        let labels: BTreeMap<String, String> = [
            ("topology.kubernetes.io/zone", "a"),
            ("netaware.io/group-l1", "g1"),
            ("gpu", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let _ = filter.matches(&labels);
    }
});
