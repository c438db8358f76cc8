//! Settings from an optional TOML file, under flags and environment.
//!
//! Precedence, highest first: command-line flag, environment variable, the
//! TOML file, the built-in default. The file's keys are the flags' long names
//! (`-` or `_`); top-level keys apply to every command that has that flag,
//! and a `[ingest]`-style table applies to one command only:
//!
//! ```toml
//! brokers = "kafka-1:9092,kafka-2:9092"
//! log_format = "json"
//!
//! [ingest]
//! listen = "0.0.0.0:8088"
//! frames_per_chunk = 5
//! rtmp_publish_key = ["k1", "k2"]
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Command;

/// The `--config` path, found before the real parse (flag or MOUTHMAP_CONFIG).
pub fn config_path(args: &[String]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("MOUTHMAP_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn values(key: &str, value: &toml::Value) -> anyhow::Result<Vec<String>> {
    Ok(match value {
        toml::Value::String(s) => vec![s.clone()],
        toml::Value::Integer(i) => vec![i.to_string()],
        toml::Value::Float(f) => vec![f.to_string()],
        toml::Value::Boolean(b) => vec![b.to_string()],
        toml::Value::Array(items) => items
            .iter()
            .map(|v| values(key, v).map(|mut x| x.remove(0)))
            .collect::<anyhow::Result<_>>()?,
        other => bail!(
            "setting {key:?} has a {} value; use a string, number, boolean or list",
            other.type_str()
        ),
    })
}

fn set_default(cmd: Command, key: &str, vals: &[String]) -> Option<Command> {
    let long = key.replace('_', "-");
    let id = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()))?
        .get_id()
        .clone();
    let vals: Vec<String> = vals.to_vec();
    Some(cmd.mut_arg(id, move |a| {
        // The file's values are not shown in --help: they can be secrets.
        let a = a.required(false);
        let a = if a.get_action().takes_values() {
            a.hide_default_value(true)
        } else {
            a
        };
        if vals.len() == 1 {
            a.default_value(vals[0].clone())
        } else {
            a.default_values(vals.clone())
        }
    }))
}

/// Applies the file's settings to `cmd` as defaults.
pub fn apply(mut cmd: Command, table: &toml::Table, path: &Path) -> anyhow::Result<Command> {
    let subcommands: BTreeSet<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for (key, value) in table {
        if let toml::Value::Table(section) = value {
            if !subcommands.contains(key) {
                bail!(
                    "{}: [{key}] is not a command (commands: {})",
                    path.display(),
                    subcommands.iter().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            for (k, v) in section {
                let vals = values(k, v)?;
                let mut found = false;
                cmd = cmd.mut_subcommand(key, |sub| match set_default(sub.clone(), k, &vals) {
                    Some(s) => {
                        found = true;
                        s
                    }
                    None => sub,
                });
                if !found {
                    bail!(
                        "{}: [{key}] has no setting {k:?}; see `mouthmap {key} --help`",
                        path.display()
                    );
                }
            }
            continue;
        }
        let vals = values(key, value)?;
        let mut found = false;
        if let Some(c) = set_default(cmd.clone(), key, &vals) {
            cmd = c;
            found = true;
        }
        for name in &subcommands {
            cmd = cmd.mut_subcommand(name, |sub| match set_default(sub.clone(), key, &vals) {
                Some(s) => {
                    found = true;
                    s
                }
                None => sub,
            });
        }
        if !found {
            bail!(
                "{}: no command has a setting {key:?}; see `mouthmap --help`",
                path.display()
            );
        }
    }
    Ok(cmd)
}

/// Reads and parses the file.
pub fn load(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("{} is not valid TOML", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cmd() -> Command {
        Command::new("mm")
            .arg(
                Arg::new("log")
                    .long("log")
                    .global(true)
                    .default_value("info"),
            )
            .subcommand(
                Command::new("ingest")
                    .arg(
                        Arg::new("brokers")
                            .long("brokers")
                            .env("MM_TEST_BROKERS_UNSET")
                            .default_value("a:1"),
                    )
                    .arg(Arg::new("key").long("key").action(ArgAction::Append))
                    .arg(
                        Arg::new("realtime")
                            .long("realtime")
                            .action(ArgAction::SetTrue),
                    ),
            )
            .subcommand(
                Command::new("tail").arg(Arg::new("brokers").long("brokers").default_value("a:1")),
            )
    }

    fn parse(table: &str, argv: &[&str]) -> anyhow::Result<clap::ArgMatches> {
        let t: toml::Table = table.parse().unwrap();
        Ok(apply(cmd(), &t, Path::new("x.toml"))?.try_get_matches_from(argv)?)
    }

    #[test]
    fn file_sets_defaults_that_flags_override() {
        let toml = "brokers = \"k:9\"\n[ingest]\nkey = [\"x\", \"y\"]\nrealtime = true\n";
        let m = parse(toml, &["mm", "ingest"]).unwrap();
        let (_, sub) = m.subcommand().unwrap();
        assert_eq!(sub.get_one::<String>("brokers").unwrap(), "k:9");
        assert_eq!(
            sub.get_many::<String>("key").unwrap().collect::<Vec<_>>(),
            ["x", "y"]
        );
        assert!(sub.get_flag("realtime"));
        let m = parse(toml, &["mm", "tail", "--brokers", "cli:1"]).unwrap();
        assert_eq!(
            m.subcommand()
                .unwrap()
                .1
                .get_one::<String>("brokers")
                .unwrap(),
            "cli:1"
        );
    }

    #[test]
    fn unknown_keys_and_sections_are_errors() {
        let e = parse("nope = 1", &["mm"]).unwrap_err().to_string();
        assert!(e.contains("no command has a setting \"nope\""), "{e}");
        let e = parse("[ingest]\nnope = 1", &["mm"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[ingest] has no setting \"nope\""), "{e}");
        let e = parse("[decode_all]\nx = 1", &["mm"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a command"), "{e}");
    }

    #[test]
    fn finds_the_config_flag_before_parsing() {
        let args: Vec<String> = ["mm", "ingest", "--config=/a.toml"]
            .map(String::from)
            .to_vec();
        assert_eq!(config_path(&args), Some(PathBuf::from("/a.toml")));
        let args: Vec<String> = ["mm", "--config", "/b.toml", "tail"]
            .map(String::from)
            .to_vec();
        assert_eq!(config_path(&args), Some(PathBuf::from("/b.toml")));
    }
}
