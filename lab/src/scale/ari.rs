//! The adjusted Rand index (Hubert and Arabie, 1985): how well one
//! partition of the nodes agrees with another, corrected for chance. 1 is
//! the same partition (whatever the ids), about 0 is as good as random.

use std::collections::HashMap;
use std::hash::Hash;

fn pairs(n: u64) -> f64 {
    (n * n.saturating_sub(1)) as f64 / 2.0
}

/// ARI of two labellings of the same items (`a[i]` and `b[i]` label item
/// `i`). Two partitions that are both trivial (all singletons, or one
/// cluster) and equal score 1.
pub fn adjusted_rand_index<A: Hash + Eq, B: Hash + Eq>(a: &[A], b: &[B]) -> f64 {
    let n = a.len().min(b.len());
    let mut joint: HashMap<(&A, &B), u64> = HashMap::new();
    let mut rows: HashMap<&A, u64> = HashMap::new();
    let mut cols: HashMap<&B, u64> = HashMap::new();
    for (x, y) in a.iter().zip(b).take(n) {
        *joint.entry((x, y)).or_default() += 1;
        *rows.entry(x).or_default() += 1;
        *cols.entry(y).or_default() += 1;
    }
    let index: f64 = joint.values().map(|&c| pairs(c)).sum();
    let sum_a: f64 = rows.values().map(|&c| pairs(c)).sum();
    let sum_b: f64 = cols.values().map(|&c| pairs(c)).sum();
    let total = pairs(n as u64);
    if total == 0.0 {
        return 1.0;
    }
    let expected = sum_a * sum_b / total;
    let max = (sum_a + sum_b) / 2.0;
    if max == expected {
        // Both partitions trivial: they agree exactly or not at all.
        return if index == max { 1.0 } else { 0.0 };
    }
    (index - expected) / (max - expected)
}

#[cfg(test)]
mod tests {
    use super::adjusted_rand_index as ari;

    #[test]
    fn the_same_partition_under_other_names_scores_one() {
        assert_eq!(ari(&[0, 0, 1, 1, 2], &["x", "x", "y", "y", "z"]), 1.0);
    }

    #[test]
    fn published_examples() {
        // scikit-learn's documented examples of adjusted_rand_score.
        assert!((ari(&[0, 0, 1, 1], &[0, 0, 1, 2]) - 0.571_428_571).abs() < 1e-6);
        assert!((ari(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]) - 0.242_424_242).abs() < 1e-6);
        // Every item in another cluster than its partners: below chance.
        assert!(ari(&[0, 0, 1, 1], &[0, 1, 0, 1]) < 0.0);
    }

    #[test]
    fn one_misplaced_item_in_a_thousand_keeps_the_index_high_but_below_one() {
        let truth: Vec<u32> = (0..1000).map(|i| i / 20).collect();
        let mut found = truth.clone();
        found[7] = 999;
        let v = ari(&truth, &found);
        assert!(v < 1.0 && v > 0.99, "{v}");
    }

    #[test]
    fn trivial_partitions() {
        assert_eq!(ari(&[1, 1, 1], &[2, 2, 2]), 1.0);
        assert_eq!(ari(&[1, 2, 3], &[4, 5, 6]), 1.0);
        assert_eq!(ari(&[1, 1, 1], &[4, 5, 6]), 0.0);
        assert_eq!(ari::<u8, u8>(&[], &[]), 1.0);
    }
}
