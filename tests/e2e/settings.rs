#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
//! Every default has one definition, in code; where the docs and the chart
//! repeat one, they say the same. For every setting, not a sample:
//!
//! - every flag of the agent, the aggregator and the CLI has a row in
//!   `docs/configuration.md` with its variable and its default, and every
//!   row names a real flag;
//! - every setting the chart passes (the aggregator's ConfigMap, the
//!   agent's environment) is a real flag, and its value parses to the
//!   binary's default, unless it is one of the chart's deliberate choices
//!   listed here with the reason.
//!
//! "The same" means the binary parses both to the same settings, so `0.1`
//! and `0.10`, or `10` and `10.0`, are equal.

use std::collections::BTreeMap;

use clap::{ArgAction, CommandFactory, FromArgMatches};
use netaware_e2e::{render_chart, repo_root};
use serde_json::Value;

/// Settings the chart sets on purpose to something else than the binary's
/// default, and why.
const CHART_CHOICES: &[(&str, &str)] = &[
    (
        "NETAWARE_LEADER_ELECTION",
        "elect even with one replica: during a rolling update old and new pods overlap",
    ),
    (
        "NETAWARE_AGGREGATOR",
        "the agents reach the aggregator through this release's Service",
    ),
    (
        "NETAWARE_AGENT_SERVICE_ACCOUNT",
        "no default: the agents' ServiceAccount is this release's",
    ),
    (
        "NETAWARE_TOKEN_FILE",
        "no default: the chart mounts the agent's projected token there",
    ),
    (
        "NETAWARE_SERVICE_NAME",
        "no default: the aggregator's Service is this release's",
    ),
    (
        "NETAWARE_CA_FILE",
        "no default: the chart mounts the aggregator's CA there",
    ),
    (
        "NETAWARE_TLS_CERT",
        "no default: the chart mounts the serving certificate there",
    ),
    (
        "NETAWARE_TLS_KEY",
        "no default: the chart mounts the serving key there",
    ),
];
/// Variables the chart sets that are not flags of the binary.
const NOT_FLAGS: &[&str] = &["LOG_FORMAT"];

/// One binary's settings: its flags with their environment variables.
struct Binary {
    name: &'static str,
    /// The docs section (`## …`) with its table.
    section: &'static str,
    command: clap::Command,
    /// Arguments that make a minimal valid command line.
    base: &'static [&'static str],
    /// Parse a command line into the binary's settings, shown as Debug.
    parse: fn(&clap::ArgMatches) -> String,
}

fn agent() -> Binary {
    Binary {
        name: "netaware-agent",
        section: "## netaware-agent",
        command: netaware_agent::config::Config::command(),
        base: &["--node-name=n", "--node-ip=127.0.0.1"],
        parse: |m| {
            format!(
                "{:?}",
                netaware_agent::config::Config::from_arg_matches(m).unwrap()
            )
        },
    }
}

fn aggregator() -> Binary {
    Binary {
        name: "netaware-aggregator",
        section: "## netaware-aggregator",
        command: netaware_aggregator::Config::command(),
        base: &[],
        parse: |m| {
            format!(
                "{:?}",
                netaware_aggregator::Config::from_arg_matches(m).unwrap()
            )
        },
    }
}

fn cli() -> Binary {
    Binary {
        name: "netaware",
        section: "## netaware (CLI)",
        command: netaware_cli::Cli::command(),
        base: &["nodes"],
        parse: |m| format!("{:?}", netaware_cli::Cli::from_arg_matches(m).unwrap()),
    }
}

impl Binary {
    /// Flags by long name (help and version left out).
    fn flags(&self) -> BTreeMap<String, &clap::Arg> {
        self.command
            .get_arguments()
            .filter_map(|a| Some((a.get_long()?.to_string(), a)))
            .filter(|(l, _)| l != "help" && l != "version")
            .collect()
    }

    fn flag_for_env(&self, var: &str) -> Option<&clap::Arg> {
        self.command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var))
    }

    /// The settings from `base` plus `extra`, with the process environment
    /// ignored (a variable set where the test runs must not decide).
    fn settings(&self, extra: &[String]) -> Result<String, String> {
        let cmd = self.command.clone().mut_args(|a| a.env(None));
        let args = std::iter::once(self.name.to_string())
            .chain(extra.iter().cloned())
            .chain(self.base.iter().map(|s| s.to_string()));
        let m = cmd.try_get_matches_from(args).map_err(|e| e.to_string())?;
        Ok((self.parse)(&m))
    }

    /// Whether `--flag=value` gives the same settings as the default.
    fn is_default(&self, long: &str, value: &str) -> Result<bool, String> {
        Ok(self.settings(&[format!("--{long}={value}")])? == self.settings(&[])?)
    }
}

/// The `|`-separated cells of the flag rows in `section` of the docs.
fn doc_rows(docs: &str, section: &str) -> Vec<Vec<String>> {
    let start = docs
        .find(&format!("{section}\n"))
        .unwrap_or_else(|| panic!("docs/configuration.md has no section '{section}'"));
    docs[start + section.len()..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `--"))
        .map(|l| {
            l.split('|')
                .skip(1)
                .take(3)
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The backticked words of a cell: "`--a`, `--b`" → ["--a", "--b"].
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

#[test]
fn every_flag_is_documented_with_its_variable_and_default() {
    let docs = std::fs::read_to_string(repo_root().join("docs/configuration.md")).unwrap();
    for bin in [agent(), aggregator(), cli()] {
        let flags = bin.flags();
        let mut documented = Vec::new();
        for row in doc_rows(&docs, bin.section) {
            let (longs, vars, default) = (ticked(&row[0]), ticked(&row[1]), &row[2]);
            assert_eq!(longs.len(), vars.len(), "{}: {row:?}", bin.name);
            for (long, var) in longs.iter().zip(&vars) {
                let name = long.trim_start_matches("--");
                let arg = flags.get(name).unwrap_or_else(|| {
                    panic!("{}: the docs list {long}, which is not a flag", bin.name)
                });
                documented.push(name.to_string());
                assert_eq!(
                    arg.get_env().and_then(|e| e.to_str()),
                    Some(var.as_str()),
                    "{}: {long} has another variable than the docs say",
                    bin.name
                );
                let what = format!("{} {long}: docs say default {default:?}", bin.name);
                if matches!(arg.get_action(), ArgAction::SetTrue) {
                    assert_eq!(default, "off", "{what}; it is a switch, off unless given");
                } else if arg.get_default_values().is_empty() {
                    assert!(default.starts_with('('), "{what}, but the flag has none");
                } else {
                    let doc_value = ticked(default)
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| panic!("{what}: put the default in backticks"));
                    assert_eq!(bin.is_default(name, &doc_value), Ok(true), "{what}");
                }
            }
        }
        let missing: Vec<&String> = flags.keys().filter(|f| !documented.contains(f)).collect();
        assert!(
            missing.is_empty(),
            "{}: flags missing from docs/configuration.md: {missing:?}",
            bin.name
        );
    }
}

/// What the chart passes (default values): the aggregator ConfigMap's data
/// and the agent container's plain `value` variables.
fn chart_settings(dir: &std::path::Path) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(dir.join("default.jsonl")).unwrap();
    let (mut aggregator, mut agent) = (BTreeMap::new(), BTreeMap::new());
    for line in text.lines() {
        let doc: Value = serde_json::from_str(line).unwrap();
        let obj = &doc["object"];
        match obj["kind"].as_str() {
            Some("ConfigMap") => {
                for (k, v) in obj["data"].as_object().unwrap() {
                    aggregator.insert(k.clone(), v.as_str().unwrap().to_string());
                }
            }
            Some("DaemonSet") => {
                let env = &obj["spec"]["template"]["spec"]["containers"][0]["env"];
                for e in env.as_array().unwrap() {
                    if let Some(v) = e["value"].as_str() {
                        agent.insert(e["name"].as_str().unwrap().to_string(), v.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    assert!(
        !aggregator.is_empty() && !agent.is_empty(),
        "rendered chart lacks the ConfigMap or the DaemonSet"
    );
    (aggregator, agent)
}

#[test]
fn what_the_chart_sets_is_the_binary_default_or_a_stated_choice() {
    let Some(dir) = render_chart("settings") else {
        return;
    };
    let (for_aggregator, for_agent) = chart_settings(&dir);
    for (bin, set) in [(aggregator(), for_aggregator), (agent(), for_agent)] {
        for (var, value) in &set {
            if NOT_FLAGS.contains(&var.as_str()) {
                continue;
            }
            let arg = bin.flag_for_env(var).unwrap_or_else(|| {
                panic!("the chart sets {var}, which no flag of {} reads", bin.name)
            });
            let long = arg.get_long().unwrap();
            let same = bin
                .is_default(long, value)
                .unwrap_or_else(|e| panic!("the chart's {var}={value:?} does not parse: {e}"));
            let choice = CHART_CHOICES.iter().find(|(v, _)| v == var);
            match (same, choice) {
                (true, None) | (false, Some(_)) => {}
                (false, None) => panic!(
                    "the chart sets {var}={value:?}, but {} --{long} defaults to {:?}: change values.yaml, \
                     or list the difference in CHART_CHOICES with the reason",
                    bin.name,
                    arg.get_default_values()
                ),
                (true, Some(_)) => {
                    panic!("{var} is listed as a chart choice but equals the default: unlist it")
                }
            }
        }
    }
    // Every listed choice is still something the chart sets.
    for (var, why) in CHART_CHOICES {
        assert!(!why.is_empty());
        let text = std::fs::read_to_string(dir.join("default.jsonl")).unwrap();
        assert!(
            text.contains(var),
            "{var} is listed as a chart choice but the chart no longer sets it"
        );
    }
}
