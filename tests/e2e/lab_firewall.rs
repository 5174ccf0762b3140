#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! A firewalled pair in the lab (every packet between f-1 and f-2 dropped)
//! is unreachable, not the closest pair: the two never share a group at any
//! level, and no RTT label reads 0 µs. (Before
//! the fix, a link with no answers read as 0 µs and the pair was merged
//! first: security review S8.)

use std::collections::BTreeMap;

use netaware_e2e::{require_root, run_lab};

#[test]
#[ignore = "needs root (network namespaces): ./test.sh runs it as root"]
fn a_firewalled_pair_never_shares_a_group_and_is_never_closest() {
    require_root();
    let run = run_lab(
        "e2e-firewall.yaml",
        "30s",
        &["--icmp", "false", "--bandwidth", "false"],
    );
    println!("{}", run.stdout);
    let labels: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_value(run.report["labels"].clone()).unwrap();
    let get = |node: &str, key: &str| -> String {
        labels
            .get(node)
            .and_then(|l| l.get(&format!("netaware.io/{key}")))
            .cloned()
            .unwrap_or_else(|| panic!("{node} has no {key}: {labels:?}"))
    };
    for level in ["group-l1", "group-l2", "group-l3"] {
        assert_ne!(get("f-1", level), get("f-2", level), "{level}: {labels:?}");
    }
    // Never "0 µs apart": every RTT label is the 0.2 ms of a peer the node
    // reaches. (One of the two may sit alone in its group, with no figures:
    // complete linkage cannot put it with the others, which include the
    // node it cannot reach.)
    for (node, l) in &labels {
        if let Some(rtt) = l.get("netaware.io/rtt-p50-us") {
            let rtt: u64 = rtt.parse().unwrap();
            assert!(
                (150..1_000).contains(&rtt),
                "{node}: rtt-p50-us {rtt} should be the 0.2 ms to the peers it reaches"
            );
            assert_eq!(l["netaware.io/loss-ppm"], "0", "{node}");
        }
    }
    // The lab saw the firewall as it is: every probe between them lost.
    let link = run.report["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["src"] == "f-1" && l["dst"] == "f-2")
        .unwrap_or_else(|| panic!("no f-1 → f-2 link in {}", run.report["links"]));
    assert_eq!(link["measured"]["loss"], 1.0, "{link}");
}
