//! What `node`, `tail`, `raise` and `check` share: the config file, the secret, logging.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use herald::auth::{SecretFile, SecretFileError};
use herald::{Config, LogFormat, Router, RouterBuilder};

use crate::CliError;

/// `--config` and `--log-format`, for every command that joins a cluster.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// The node's configuration file (TOML; see docs/operations.md).
    #[arg(long, short, value_name = "FILE", default_value = "herald.toml")]
    pub(crate) config: PathBuf,
    /// Log format; overrides `log.format` in the config. Levels come from RUST_LOG.
    #[arg(long, value_enum)]
    pub(crate) log_format: Option<LogFormatArg>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum LogFormatArg {
    Text,
    Json,
}

/// The config and the directory its relative paths start from.
pub(crate) fn load(args: &ConfigArgs) -> Result<(Config, PathBuf), CliError> {
    if !args.config.exists() {
        return Err(CliError::usage(format!(
            "{}: no such config file; pass --config FILE (examples/herald.toml is a commented start)",
            args.config.display()
        )));
    }
    let config = Config::load(&args.config).map_err(CliError::usage)?;
    let dir = args
        .config
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((config, dir))
}

/// Starts logging to stderr: `RUST_LOG` (default `info`), text or JSON.
pub(crate) fn init_logging(config: &Config, arg: Option<LogFormatArg>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match arg {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Text) => false,
        None => config.log.format == LogFormat::Json,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The keyring from the config's secret file; `create` makes the file on first start.
pub(crate) fn with_secret(
    builder: RouterBuilder,
    config: &Config,
    dir: &Path,
    create: bool,
) -> Result<RouterBuilder, CliError> {
    Ok(builder.keyring(load_secret(config, dir, create)?.keyring()))
}

/// The config's secret file; `create` makes the file on first start.
pub(crate) fn load_secret(
    config: &Config,
    dir: &Path,
    create: bool,
) -> Result<SecretFile, CliError> {
    let path = config.secret_path(dir);
    match SecretFile::load(&path) {
        Ok(s) => Ok(s),
        Err(SecretFileError::Io { ref source, .. })
            if create && source.kind() == std::io::ErrorKind::NotFound =>
        {
            let s = SecretFile::create(&path)?;
            tracing::warn!(
                path = %path.display(),
                "created a new cluster secret (mode 0600): copy it to every other node"
            );
            Ok(s)
        }
        Err(e) => Err(e.into()),
    }
}

/// Builds the router, turning a build error into one line that names the setting.
pub(crate) fn build(builder: RouterBuilder) -> Result<Router, CliError> {
    builder.build().map_err(|e| match e {
        herald::BuildError::Io { what, source } if source.kind() == std::io::ErrorKind::AddrInUse => {
            CliError::usage(format!(
                "{what}: address in use; another herald (or another program) holds it: stop it or change the address in the config"
            ))
        }
        other => CliError::usage(other),
    })
}

/// A flag set by SIGINT or SIGTERM.
pub(crate) fn stop_flag() -> Result<Arc<AtomicBool>, CliError> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .map_err(|e| CliError::usage(format!("cannot handle signals: {e}")))?;
    }
    Ok(flag)
}
