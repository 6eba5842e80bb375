//! What `node`, `tail`, `raise` and `check` share: the config file, the secret, logging.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use herald::auth::{SecretFile, SecretFileError};
use herald::service::ServiceConfig;
use herald::{Config, ConfigError, LogFormat, Router, RouterBuilder};

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

/// Problems that keep a config from being used, all of them: what `check` prints and
/// `node` refuses.
#[derive(Debug)]
pub(crate) struct Problems {
    pub(crate) file: PathBuf,
    pub(crate) errors: Vec<ConfigError>,
}

impl From<Problems> for CliError {
    fn from(p: Problems) -> Self {
        let file = p.file.display();
        match &p.errors[..] {
            [one] => Self::usage(format!("{file}: {one}")),
            all => {
                let mut text = format!("{file}: {} problems:", all.len());
                for e in all {
                    text.push_str(&format!("\n  {e}"));
                }
                Self::usage(text)
            }
        }
    }
}

/// The config and the directory its relative paths start from.
pub(crate) fn load(args: &ConfigArgs) -> Result<(Config, PathBuf), CliError> {
    Ok(load_checked(args)?)
}

/// [`load`], keeping the problems apart for `check`.
pub(crate) fn load_checked(args: &ConfigArgs) -> Result<(Config, PathBuf), Problems> {
    if !args.config.exists() {
        return Err(Problems {
            file: args.config.clone(),
            errors: vec![ConfigError {
                key: "config".into(),
                problem: "no such config file; pass --config FILE (examples/herald.toml is a commented start)".into(),
            }],
        });
    }
    let config = Config::load(&args.config).map_err(|e| Problems {
        file: args.config.clone(),
        errors: e.iter().cloned().collect(),
    })?;
    let dir = args
        .config
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((config, dir))
}

/// The router builder of a config, its host names looked up, as one error for a person.
pub(crate) fn router_builder(config: &Config, file: &Path) -> Result<RouterBuilder, CliError> {
    config.router_builder().map_err(|e| {
        Problems {
            file: file.to_path_buf(),
            errors: e.iter().cloned().collect(),
        }
        .into()
    })
}

/// The state of the cluster's secret file.
#[derive(Debug)]
pub(crate) enum Secret {
    /// Read and usable.
    Loaded(SecretFile),
    /// Not there yet; `herald node` creates it (the directory is writable).
    ToCreate(PathBuf),
}

/// What `node` starts from, checked: the builder (host names looked up, every rule of the
/// builder and the service applied), the service's settings and the secret file.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) builder: RouterBuilder,
    pub(crate) service: Option<ServiceConfig>,
    pub(crate) secret: Secret,
}

/// Everything `herald node` checks before it binds a socket, collecting every problem
/// instead of stopping at the first. `herald check` runs exactly this, so it refuses what
/// `node` would.
pub(crate) fn prepare(config: &Config, dir: &Path, file: &Path) -> Result<Prepared, Problems> {
    let mut errors = Vec::new();
    let builder = config
        .router_builder()
        .map_err(|e| errors.extend(e.iter().cloned()))
        .ok();
    let service = config.service_config(dir).map_err(|e| errors.push(e)).ok();
    // The service's own checks too: its limits, and that the TLS files load and match.
    if let Some(Some(s)) = &service
        && let Err(herald::service::ServiceError::Invalid(e)) = s.validate()
    {
        for problem in e.iter() {
            if !errors.contains(problem) {
                errors.push(problem.clone());
            }
        }
    }
    let secret = secret(&config.secret_path(dir))
        .map_err(|e| errors.push(e))
        .ok();
    match (builder, service, secret) {
        (Some(builder), Some(service), Some(secret)) if errors.is_empty() => Ok(Prepared {
            builder,
            service,
            secret,
        }),
        _ => Err(Problems {
            file: file.to_path_buf(),
            errors,
        }),
    }
}

/// Whether the secret file can be read (only by its owner), or created where it is missing.
fn secret(path: &Path) -> Result<Secret, ConfigError> {
    let bad = |problem: String| ConfigError {
        key: "secret_file".into(),
        problem,
    };
    match SecretFile::load(path) {
        Ok(s) => Ok(Secret::Loaded(s)),
        Err(SecretFileError::Io { ref source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            // Missing: it is created at start, so the directory must take a new file.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            match tempfile::Builder::new()
                .prefix(".herald-check")
                .tempfile_in(dir)
            {
                Ok(_probe) => Ok(Secret::ToCreate(path.to_path_buf())),
                Err(e) => Err(bad(format!(
                    "{} does not exist and cannot be created in {}: {e}; create the directory, or make the secret elsewhere with `herald keygen` and point secret_file at it",
                    path.display(),
                    dir.display()
                ))),
            }
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

impl Prepared {
    /// The builder (without its keyring) and the secret file, created if it is missing.
    pub(crate) fn into_parts(self) -> Result<(RouterBuilder, SecretFile), CliError> {
        let secret = match self.secret {
            Secret::Loaded(s) => s,
            Secret::ToCreate(path) => {
                let s = SecretFile::create(&path)?;
                tracing::warn!(
                    path = %path.display(),
                    "created a new cluster secret (mode 0600): copy it to every other node"
                );
                s
            }
        };
        Ok((self.builder, secret))
    }
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

/// The keyring from the config's secret file (which must exist).
pub(crate) fn with_secret(
    builder: RouterBuilder,
    config: &Config,
    dir: &Path,
) -> Result<RouterBuilder, CliError> {
    let secret = SecretFile::load(&config.secret_path(dir))?;
    Ok(builder.keyring(secret.keyring()))
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
