//! Ready-made model values for other crates' tests (feature
//! `test-support`): one definition instead of a copy per test suite.

use crate::infer::Inferred;
use crate::labels::NodeFacts;

/// A recomputation in which every named node is in group `g1` at every
/// level, fresh, with the given quality and no figures.
pub fn inferred(nodes: &[(&str, u32)]) -> Inferred {
    let mut i = Inferred {
        computed_unix_us: 1_795_000_000_000_000,
        ..Default::default()
    };
    for (n, q) in nodes {
        i.facts.insert(
            n.to_string(),
            NodeFacts {
                groups: ["g1".into(), "g1".into(), "g1".into()],
                quality: Some(*q),
                figures: None,
                fresh: true,
                nearest: vec![],
                summary_since_unix_us: 0,
            },
        );
    }
    i
}
