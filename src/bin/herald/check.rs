//! `herald check`: validate a config and print it with every default filled in.

use crate::CliError;
use crate::common::{self, ConfigArgs};

/// Arguments of `herald check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

pub(crate) fn run(args: &CheckArgs) -> Result<(), CliError> {
    let (config, dir) = common::load(&args.config)?;
    config
        .router_builder()
        .check_membership()
        .map_err(|e| CliError::usage(format!("{}: {e}", args.config.config.display())))?;
    let secret = config.secret_path(&dir);
    let state = match herald::auth::SecretFile::load(&secret) {
        Ok(s) => format!(
            "ok, {} key(s), signing with key id {}",
            s.key_ids().count(),
            s.signing_key_id()
        ),
        Err(e) => format!("NOT USABLE: {e}"),
    };
    say!("# {}: valid", args.config.config.display());
    say!(
        "# secret file {} ({state}); the secret itself is never printed",
        secret.display()
    );
    say!("{}", config.to_toml());
    Ok(())
}
