//! The model's error type: a label that Kubernetes would refuse, or a
//! placement request that cannot be met. Every message says what was wrong
//! and what to change.

/// Everything the model refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    // === labels ===
    #[error(
        "label prefix '{0}' is invalid: it must be a DNS subdomain (lower-case letters, digits, \
         '-' and '.', at most 253 characters) followed by '/', e.g. netaware.io/"
    )]
    LabelPrefix(String),
    #[error(
        "label prefix '{0}' is reserved for Kubernetes (kubernetes.io, k8s.io); choose your own domain"
    )]
    ReservedLabelPrefix(String),
    #[error(
        "label name '{0}' is invalid: at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"
    )]
    LabelName(String),
    #[error(
        "label value '{0}' is invalid: at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric, or empty"
    )]
    LabelValue(String),

    // === placement ===
    #[error("k must be at least 1")]
    ZeroK,
    #[error("k = {k} but only {eligible} nodes are eligible")]
    TooFewEligible { k: usize, eligible: usize },
    #[error("{include} nodes must be included but k is only {k}")]
    TooManyIncluded { k: usize, include: usize },
    #[error("node {0} must be included but is not eligible")]
    IncludeNotEligible(usize),
    #[error(
        "k = {k} but only {eligible} of {known} known nodes are eligible ({why}); ask for fewer nodes or relax the constraints"
    )]
    TooFewEligibleBecause {
        k: usize,
        eligible: usize,
        known: usize,
        why: String,
    },
    #[error("{role} names unknown node '{name}' (no agent with that node name ever connected)")]
    UnknownNode { role: &'static str, name: String },
    #[error("{role} names node '{name}' twice; name each node once")]
    DuplicateNode { role: &'static str, name: String },
    #[error("k = {k} is more than the {max} nodes one request may ask for")]
    TooLargeK { k: usize, max: usize },
    #[error("{role} names {count} nodes; at most {max} are accepted")]
    TooManyNames {
        role: &'static str,
        count: usize,
        max: usize,
    },
    #[error("node '{0}' is both included and excluded")]
    IncludedAndExcluded(String),
    #[error("node '{name}' must be included but is not eligible: {reason}")]
    IncludeIneligible { name: String, reason: String },
    #[error(
        "a label selector needs the Node labels, but this aggregator has no Kubernetes connection (dry run or no kubeconfig)"
    )]
    NoLabels,
    #[error("min_bandwidth_mbps must be a finite number >= 0, got {0}")]
    BadMinBandwidth(f64),
    #[error(
        "no {k} nodes whose every pair has a measured bandwidth of at least {min_bandwidth_mbps} Mbit/s and a measured RTT; lower the minimum, ask for fewer nodes, or wait for more measurements"
    )]
    NoMeasuredSet { k: usize, min_bandwidth_mbps: f64 },
    #[error(
        "min_bandwidth_mbps needs a measured bandwidth between every chosen pair, but with more than {max} eligible nodes pairs are probed sparsely and most have none; narrow the candidates to at most {max} nodes (label selector, exclude), or ask without a minimum and read the bottleneck figures of the answer"
    )]
    MinBandwidthSparse { max: usize },
    #[error(
        "the eligible nodes form {units} latency groups and ungrouped nodes, more than the {max} a placement works with: most have no group yet; wait for the next recomputation, or narrow the candidates (label selector, exclude)"
    )]
    TooManyUnits { units: usize, max: usize },
    #[error(
        "the placement search ran past its deadline and was stopped; ask for fewer nodes or narrow the candidates (selector, exclude)"
    )]
    Stopped,

    // === shapes ===
    #[error(
        "shape '{shape}' is invalid: {why}; write name=size[:bytes] levels, innermost first, e.g. tp=2,dp=4 or tp=2:256MiB,dp=4:16MiB"
    )]
    BadShape { shape: String, why: String },
    #[error("the shape has {ranks} ranks but {nodes} nodes were given; give one node per rank")]
    ShapeSize { ranks: usize, nodes: usize },
    #[error(
        "the shape has {ranks} ranks but {k} nodes were asked for: a shaped job takes one node per rank; ask for {ranks} nodes or leave k out"
    )]
    ShapeK { ranks: usize, k: usize },
}

/// Result alias for the model.
pub type Result<T, E = Error> = std::result::Result<T, E>;
