//! `herald keygen`: create a secret file, or rotate the keys in one.

use std::path::PathBuf;

use herald::auth::{SecretFile, SecretFileError};

use crate::CliError;

/// Arguments of `herald keygen`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Rotation without restarts: --add-key, copy the file to every node; \
    --sign ID, copy; --retire OLD_ID, copy. A running node reloads its secret file on SIGHUP \
    and within a second of the file changing. --fingerprint shows which key each node holds."
)]
pub(crate) struct KeygenArgs {
    /// The secret file.
    #[arg(default_value = "herald.secret")]
    path: PathBuf,
    /// Replace an existing file with a fresh single-key secret (every node must get the new
    /// file, or it can no longer talk to the others).
    #[arg(long, conflicts_with_all = ["add_key", "rotate", "sign", "retire"])]
    force: bool,
    /// Add a fresh key to an existing file. It verifies at once but does not sign yet.
    #[arg(long, conflicts_with = "rotate")]
    add_key: bool,
    /// Add a fresh key to an existing file and make it the signing key at once.
    #[arg(long)]
    rotate: bool,
    /// Make this key id the signing key.
    #[arg(long, value_name = "ID")]
    sign: Option<u32>,
    /// Remove this key id from the file (the signing key cannot be removed).
    #[arg(long, value_name = "ID")]
    retire: Option<u32>,
    /// Print a short fingerprint of each key and change nothing: nodes whose fingerprints
    /// match for a key id hold the same key (the fingerprint reveals nothing of the key).
    #[arg(long, conflicts_with_all = ["force", "add_key", "rotate", "sign", "retire"])]
    fingerprint: bool,
}

pub(crate) fn run(args: &KeygenArgs) -> Result<(), CliError> {
    let path = &args.path;
    if args.fingerprint {
        let secret = SecretFile::load(path)?;
        for (id, print) in secret.fingerprints() {
            let signs = if id == secret.signing_key_id() {
                "  (signs)"
            } else {
                ""
            };
            say!("key id {id}  fingerprint {print}{signs}");
        }
        return Ok(());
    }
    let rotating = args.add_key || args.rotate || args.sign.is_some() || args.retire.is_some();
    if !rotating {
        let secret = if args.force {
            let secret = SecretFile::generate().map_err(SecretFileError::from)?;
            secret.save(path)?;
            secret
        } else {
            SecretFile::create(path).map_err(|e| match e {
                SecretFileError::Exists { .. } => CliError::usage(format!(
                    "{} already exists; use --add-key or --rotate to change its keys, or --force to replace it",
                    path.display()
                )),
                other => other.into(),
            })?
        };
        say!(
            "wrote {} (mode 0600) with key id {}; copy it to every node of the cluster",
            path.display(),
            secret.signing_key_id()
        );
        return Ok(());
    }

    let mut secret = SecretFile::load(path)?;
    if args.add_key || args.rotate {
        let id = secret
            .add_generated(args.rotate)
            .map_err(SecretFileError::from)?;
        say!("added key id {id}");
        if args.rotate {
            say!("key id {id} now signs");
        }
    }
    if let Some(id) = args.sign {
        secret
            .set_signing(id)
            .map_err(|e| CliError::usage(format!("--sign {id}: {e}")))?;
        say!("key id {id} now signs");
    }
    if let Some(id) = args.retire {
        secret
            .retire(id)
            .map_err(|e| CliError::usage(format!("--retire {id}: {e}")))?;
        say!("key id {id} retired");
    }
    secret.save(path)?;
    let ids: Vec<String> = secret.key_ids().map(|id| id.to_string()).collect();
    say!(
        "{}: keys {}, signing with {}",
        path.display(),
        ids.join(", "),
        secret.signing_key_id()
    );
    Ok(())
}
