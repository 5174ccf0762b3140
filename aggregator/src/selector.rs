//! Kubernetes label selectors in their string form (`kubectl -l` syntax):
//! `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined by
//! commas (every requirement must hold). kube-core matches selectors but
//! does not parse the string form, so this does, into its types.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector, SelectorExt};
use netaware_model::labels;
use netaware_model::place::LabelFilter;

/// Why a selector string is not valid; the message names the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector '{selector}': {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

/// Label keys: an optional DNS-subdomain prefix and `/`, then a name.
fn valid_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.is_none_or(labels::is_dns_subdomain) && labels::check_name(name).is_ok()
}

fn valid_value(v: &str) -> bool {
    labels::check_value(v).is_ok()
}

/// Split at commas outside parentheses.
fn terms(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("')' without '('".into());
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("'(' without ')'".into());
    }
    out.push(&s[start..]);
    Ok(out)
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    if valid_key(k) {
        Ok(k.to_string())
    } else {
        Err(format!("'{k}' is not a valid label key"))
    }
}

fn value(v: &str) -> Result<String, String> {
    let v = v.trim();
    if valid_value(v) {
        Ok(v.to_string())
    } else {
        Err(format!("'{v}' is not a valid label value"))
    }
}

fn set_op(t: &str) -> Option<(&str, bool, &str)> {
    // `key in (…)` / `key notin (…)`: the operator is a whole word.
    let open = t.find('(')?;
    let head = t[..open].trim_end();
    let body = t[open + 1..].trim_end().strip_suffix(')')?;
    for (op, negate) in [("notin", true), ("in", false)] {
        if let Some(k) = head.strip_suffix(op)
            && k.ends_with(char::is_whitespace)
        {
            return Some((k, negate, body));
        }
    }
    None
}

fn expression(t: &str) -> Result<Expression, String> {
    let t = t.trim();
    if t.is_empty() {
        return Err("empty requirement (stray comma?)".into());
    }
    if let Some((k, negate, body)) = set_op(t) {
        let values = body
            .split(',')
            .map(value)
            .collect::<Result<BTreeSet<String>, String>>()?;
        let k = key(k)?;
        return Ok(if negate {
            Expression::NotIn(k, values)
        } else {
            Expression::In(k, values)
        });
    }
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(Expression::NotEqual(key(k)?, value(v)?));
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        return Ok(Expression::Equal(key(k)?, value(v)?));
    }
    if let Some(k) = t.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key(k)?));
    }
    Ok(Expression::Exists(key(t)?))
}

/// Longest selector accepted: Kubernetes' own label selectors are a few
/// hundred bytes; parsing a megabyte would only cost the aggregator.
pub const MAX_SELECTOR_BYTES: usize = 4096;

/// Parse a selector; the empty string selects everything.
pub fn parse(s: &str) -> Result<Selector, SelectorError> {
    let err = |reason: String| SelectorError {
        selector: s.to_string(),
        reason,
    };
    if s.len() > MAX_SELECTOR_BYTES {
        return Err(SelectorError {
            selector: format!("{}…", s.chars().take(40).collect::<String>()),
            reason: format!(
                "{} bytes; at most {MAX_SELECTOR_BYTES} are accepted",
                s.len()
            ),
        });
    }
    if s.trim().is_empty() {
        return Ok(Selector::default());
    }
    terms(s)
        .map_err(err)?
        .into_iter()
        .map(expression)
        .collect::<Result<Selector, String>>()
        .map_err(err)
}

/// Parse a selector into the label filter the placement model applies.
pub fn filter(s: &str) -> Result<LabelFilter, SelectorError> {
    let selector = parse(s)?;
    Ok(LabelFilter::new(s, move |labels| selector.matches(labels)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_matches_like_kubectl() {
        let node = labels(&[
            ("topology.kubernetes.io/zone", "dj"),
            ("gpu", "a100"),
            ("pool", ""),
        ]);
        let yes = [
            "",
            "topology.kubernetes.io/zone=dj",
            "topology.kubernetes.io/zone==dj",
            "gpu!=h100",
            "gpu in (a100, h100)",
            "gpu notin (h100)",
            "pool",
            "!spot",
            "missing notin (x)",
            "gpu=a100, topology.kubernetes.io/zone in (dj,se)",
        ];
        for s in yes {
            assert!(parse(s).unwrap().matches(&node), "{s}");
            // The filter handed to the model decides the same, and keeps the text.
            let f = filter(s).unwrap();
            assert!(f.matches(&node), "{s}");
            assert_eq!(f.text(), s);
        }
        let no = [
            "topology.kubernetes.io/zone=se",
            "gpu!=a100",
            "gpu in (h100)",
            "gpu notin (a100,h100)",
            "spot",
            "!gpu",
            "gpu=a100,spot",
        ];
        for s in no {
            assert!(!parse(s).unwrap().matches(&node), "{s}");
            assert!(!filter(s).unwrap().matches(&node), "{s}");
        }
    }

    #[test]
    fn a_selector_longer_than_the_limit_is_refused_and_not_echoed_whole() {
        let long = format!("a in ({})", vec!["x"; 3000].join(","));
        let e = parse(&long).unwrap_err().to_string();
        assert!(e.contains("at most 4096"), "{e}");
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        for (s, needle) in [
            ("gpu in (a100", "'(' without ')'"),
            ("gpu)", "')' without '('"),
            ("gpu=a100,", "empty requirement"),
            ("bad key=x", "'bad key' is not a valid label key"),
            ("gpu=a b", "'a b' is not a valid label value"),
            ("-x", "not a valid label key"),
        ] {
            let e = parse(s).unwrap_err().to_string();
            assert!(e.contains(needle), "{s}: {e}");
            assert!(e.contains(s), "{s}: {e}");
            assert_eq!(filter(s).unwrap_err().to_string(), e);
        }
    }
}
