//! The `herald` command.
//!
//! `demo`, `node`, `tail`, `raise`, `check`, `bench` and `keygen`, and the hidden `child`
//! that `demo` and `bench` start.
// The loom switch (`crate::sync`) is the library's business; the command uses std directly.
#![allow(clippy::disallowed_types)]

/// `println!` for the command's output: a closed pipe (`herald demo | head`) ends the
/// command quietly instead of panicking, and any other write error is one line on stderr.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::output_failed(&e)
        }
    }};
}

mod bench;
#[cfg(feature = "nats")]
mod bench_nats;
mod check;
mod child;
mod children;
mod common;
mod control;
mod demo;
mod health;
mod http;
mod json;
mod keygen;
mod keys;
mod load;
mod members;
mod nats_server;
mod node;
mod raise;
mod status;
mod tail;

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// herald: signed, gap-detecting event fan-out between the instances of an application.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show herald at work: three node processes on loopback keep their caches of product
    /// prices fresh, then a throughput run between them. No arguments or files needed.
    Demo(demo::DemoArgs),
    /// Run a node until SIGINT or SIGTERM, then flush and exit; SIGHUP reloads the secret file.
    Node(node::NodeArgs),
    /// Join the cluster and print each event and each Missed as it arrives.
    Tail(tail::TailArgs),
    /// Print the cluster's members as a running node sees them (asks its [metrics] HTTP side).
    Members(members::MembersArgs),
    /// Raise an event cluster-wide (through the node running with the config, if one does)
    /// and report who acknowledged it.
    Raise(raise::RaiseArgs),
    /// Show the running node: counters, and each peer it hears (alive, rejected with the
    /// reason and a hint, or silent). Asks the node through its control socket.
    Status(status::StatusArgs),
    /// Check a config file as `node` would before starting, report every problem, and print
    /// it with every default (the secret is never printed).
    Check(check::CheckArgs),
    /// Load between two nodes on loopback: events/s, MB/s, latency percentiles, losses.
    Bench(bench::BenchArgs),
    /// Create a cluster secret file (mode 0600), or add, switch and retire its keys.
    Keygen(keygen::KeygenArgs),
    /// A node that `demo` and `bench` start and drive over standard input and output.
    #[command(hide = true)]
    Child(child::ChildArgs),
}

/// An error for a person: one line, what went wrong and how to fix it.
#[derive(Debug)]
pub(crate) struct CliError(String);

impl CliError {
    pub(crate) fn usage(message: impl fmt::Display) -> Self {
        Self(message.to_string())
    }

    /// Exit code 2 with nothing more on stderr: the output already said what went wrong.
    pub(crate) fn quiet() -> Self {
        Self(String::new())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<herald::auth::SecretFileError> for CliError {
    fn from(e: herald::auth::SecretFileError) -> Self {
        Self(e.to_string())
    }
}

/// Ends the process after stdout failed.
pub(crate) fn output_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("herald: cannot write to standard output: {e}");
    std::process::exit(2);
}

/// A usage error from the argument parser as one line (`herald: …`) with exit code 2; help
/// and version print as usual.
fn parse_args() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    Cli::try_parse().map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            let text = e.render().to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
                .map(|l| l.strip_prefix("error: ").unwrap_or(l))
                .collect();
            eprintln!("herald: {} (see --help)", parts.join(" "));
            ExitCode::from(2)
        }
    })
}

fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let result = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Node(args) => node::run_node(args),
        Command::Tail(args) => tail::run_tail(args),
        Command::Members(args) => members::run(args),
        Command::Raise(args) => raise::run(args),
        Command::Status(args) => status::run(args),
        Command::Check(args) => check::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Child(args) => child::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.0.is_empty() {
                eprintln!("herald: {e}");
            }
            ExitCode::from(2)
        }
    }
}
