//! `herald check`: validate a config exactly as `herald node` does before it starts, report
//! every problem at once, and print the config with every default filled in.

use std::path::Path;

use herald::ConfigError;
use serde::Serialize;

use crate::CliError;
use crate::common::{self, ConfigArgs, Secret};
use crate::json;

/// Arguments of `herald check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// One JSON object (`valid`, `problems`, `secret_file`) instead of text; the exit code
    /// is the same.
    #[arg(long)]
    json: bool,
}

/// `herald check --json`.
#[derive(Debug, Serialize)]
struct Report<'a> {
    /// The config file checked.
    config: &'a Path,
    /// Whether `herald node` would start with it.
    valid: bool,
    /// Every problem, each naming its key.
    problems: &'a [ConfigError],
    /// The secret file, when the config could be read that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_file: Option<SecretReport<'a>>,
}

#[derive(Debug, Serialize)]
struct SecretReport<'a> {
    path: &'a Path,
    /// `ok`, or `missing` (`herald node` creates it at start).
    state: &'static str,
    key_ids: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_key_id: Option<u32>,
}

pub(crate) fn run(args: &CheckArgs) -> Result<(), CliError> {
    let file = &args.config.config;
    let checked = common::load_checked(&args.config).and_then(|(config, dir)| {
        let prepared = common::prepare(&config, &dir, file)?;
        Ok((config, dir, prepared))
    });
    let (config, dir, prepared) = match checked {
        Ok(c) => c,
        Err(problems) if args.json => {
            json::print(&Report {
                config: file,
                valid: false,
                problems: &problems.errors,
                secret_file: None,
            });
            return Err(CliError::quiet());
        }
        Err(problems) => return Err(problems.into()),
    };
    let path = config.secret_path(&dir);
    let secret = match &prepared.secret {
        Secret::Loaded(s) => SecretReport {
            path: &path,
            state: "ok",
            key_ids: s.key_ids().collect(),
            signing_key_id: Some(s.signing_key_id()),
        },
        Secret::ToCreate(_) => SecretReport {
            path: &path,
            state: "missing",
            key_ids: Vec::new(),
            signing_key_id: None,
        },
    };
    if args.json {
        json::print(&Report {
            config: file,
            valid: true,
            problems: &[],
            secret_file: Some(secret),
        });
        return Ok(());
    }
    let state = match secret.signing_key_id {
        Some(id) => format!(
            "ok, {} key(s), signing with key id {id}",
            secret.key_ids.len()
        ),
        None => "missing: `herald node` creates it at start".to_owned(),
    };
    say!("# {}: valid", file.display());
    say!(
        "# secret file {} ({state}); the secret itself is never printed",
        path.display()
    );
    say!("{}", config.to_toml());
    Ok(())
}
