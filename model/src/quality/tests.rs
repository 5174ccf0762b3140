use super::*;

fn link(p50: f64, loss: f64) -> PeerLink {
    PeerLink {
        rtt_p50_us: p50,
        rtt_p99_us: p50 * 2.0,
        jitter_us: p50 / 10.0,
        loss_ppm: loss,
        placement_loss_ppm: loss,
        loss_probes: 1_000,
        bandwidth_mbps: None,
    }
}

#[test]
fn a_perfect_node_scores_100_and_a_terrible_one_near_0() {
    let perfect = figures(&[link(0.0, 0.0)]).unwrap();
    assert_eq!(
        score(&perfect, &Weights::default(), &Scales::default()),
        100
    );
    let awful = figures(&[link(1e7, 1e6)]).unwrap();
    assert!(score(&awful, &Weights::default(), &Scales::default()) <= 1);
}

#[test]
fn medians_isolate_the_bad_node_not_its_neighbours() {
    // Group of 4; node 3 loses 2 % on every link. Node 0 sees three
    // peers, one of them node 3.
    let good = link(250.0, 0.0);
    let bad = link(250.0, 20_000.0);
    let node0 = figures(&[good, good, bad]).unwrap();
    let node3 = figures(&[bad, bad, bad]).unwrap();
    assert_eq!(node0.loss_ppm, 0.0);
    assert_eq!(node3.loss_ppm, 20_000.0);
    let (w, s) = (Weights::default(), Scales::default());
    assert!(score(&node3, &w, &s) < score(&node0, &w, &s));
}

#[test]
fn more_loss_or_delay_always_scores_lower() {
    let (w, s) = (Weights::default(), Scales::default());
    let mut seed = 3u64;
    let mut rnd = |scale: f64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (seed >> 11) as f64 / (1u64 << 53) as f64 * scale
    };
    for _ in 0..2_000 {
        let base = Figures {
            rtt_p50_us: rnd(20_000.0),
            rtt_p99_us: rnd(50_000.0),
            jitter_us: rnd(2_000.0),
            loss_ppm: rnd(50_000.0),
            loss_probes: 1_000,
            bandwidth_mbps: if rnd(1.0) < 0.5 {
                Some(rnd(2_000.0))
            } else {
                None
            },
            peers: 3,
        };
        let r = raw_score(&base, &w, &s);
        let worse = [
            Figures {
                loss_ppm: base.loss_ppm + 1.0 + rnd(10_000.0),
                ..base
            },
            Figures {
                rtt_p50_us: base.rtt_p50_us + 1.0 + rnd(5_000.0),
                ..base
            },
            Figures {
                rtt_p99_us: base.rtt_p99_us + 1.0 + rnd(5_000.0),
                ..base
            },
            Figures {
                jitter_us: base.jitter_us + 1.0 + rnd(500.0),
                ..base
            },
        ];
        for f in worse {
            assert!(raw_score(&f, &w, &s) < r, "{f:?} vs {base:?}");
            assert!(score(&f, &w, &s) <= score(&base, &w, &s));
        }
    }
}

#[test]
fn unknown_bandwidth_drops_out_and_more_bandwidth_helps() {
    let (w, s) = (Weights::default(), Scales::default());
    let f = figures(&[link(300.0, 0.0)]).unwrap();
    assert_eq!(f.bandwidth_mbps, None);
    let slow = Figures {
        bandwidth_mbps: Some(100.0),
        ..f
    };
    let fast = Figures {
        bandwidth_mbps: Some(10_000.0),
        ..f
    };
    assert!(raw_score(&fast, &w, &s) > raw_score(&slow, &w, &s));
}

#[test]
fn weights_change_what_matters() {
    let s = Scales::default();
    let lossy = figures(&[link(100.0, 5_000.0)]).unwrap();
    let slow = figures(&[link(5_000.0, 0.0)]).unwrap();
    let loss_heavy = Weights {
        loss: 1.0,
        rtt_p50: 0.0,
        rtt_p99: 0.0,
        jitter: 0.0,
        bandwidth: 0.0,
    };
    let delay_heavy = Weights {
        loss: 0.0,
        rtt_p50: 1.0,
        rtt_p99: 0.0,
        jitter: 0.0,
        bandwidth: 0.0,
    };
    assert!(score(&lossy, &loss_heavy, &s) < score(&slow, &loss_heavy, &s));
    assert!(score(&lossy, &delay_heavy, &s) > score(&slow, &delay_heavy, &s));
}

#[test]
fn no_peers_no_figures() {
    assert!(figures(&[]).is_none());
    assert_eq!(median(vec![1.0, 3.0, 2.0, 10.0]), Some(2.5));
}

#[test]
fn own_figures_read_healthy_while_up_to_three_quarters_of_the_peers_are_bad() {
    let (good, bad) = (link(250.0, 0.0), link(250.0, 20_000.0));
    let mut peers = vec![good, good];
    peers.extend([bad; 6]);
    assert_eq!(own(peers.iter()).unwrap().loss_ppm, 0.0);
    // One more bad peer and the quarter is bad too.
    peers.remove(0);
    assert_eq!(own(peers.iter()).unwrap().loss_ppm, 20_000.0);
    // Two peers: the better one; none: nothing.
    assert_eq!(own([bad, good].iter()).unwrap().loss_ppm, 0.0);
    assert_eq!(own([].iter()), None);
}

#[test]
fn clearly_worse_needs_twice_the_figure_and_the_floor() {
    let node = |jitter_us: f64, loss_ppm: f64| Own {
        jitter_us,
        loss_ppm,
    };
    let healthy = node(20.0, 0.0);
    assert!(!clearly_worse(&healthy, &healthy));
    // Lossy (2 %) or jittery (400 µs): clearly worse.
    assert!(clearly_worse(&node(20.0, 20_000.0), &healthy));
    assert!(clearly_worse(&node(400.0, 0.0), &healthy));
    // Noise is not: 0.1 % loss against none, 130 µs jitter against 20,
    // and 1.5 % against 1 %.
    assert!(!clearly_worse(&node(20.0, 1_000.0), &healthy));
    assert!(!clearly_worse(&node(130.0, 0.0), &healthy));
    assert!(!clearly_worse(&node(20.0, 15_000.0), &node(20.0, 10_000.0)));
    // Never answered (infinite): worse than anything finite, and a node
    // that never answered finds nobody worse.
    let silent = node(f64::INFINITY, 1e6);
    assert!(clearly_worse(&silent, &healthy));
    assert!(!clearly_worse(&healthy, &silent));
}
