use super::*;

#[test]
fn poisson_upper_bounds_match_the_tables() {
    // Garwood's exact one-sided 95 % limits: ½·χ²(0.95, 2k + 2).
    for (k, want) in [(0, 2.996), (1, 4.744), (2, 6.296), (10, 17.0), (100, 117.6)] {
        let got = poisson_upper95(k);
        assert!((got - want).abs() < 0.01 * want, "k = {k}: {got} vs {want}");
    }
    // Growing with the count.
    assert!(poisson_upper95(3) > poisson_upper95(2));
}
