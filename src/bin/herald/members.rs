//! `herald members`: the cluster as a running node sees it, asked of the node's HTTP side
//! (`/members`, next to `/metrics`).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use herald::Router;
use herald::membership::MemberState;

use crate::CliError;
use crate::common::{self, ConfigArgs};

/// Arguments of `herald members`.
#[derive(Debug, clap::Args)]
pub(crate) struct MembersArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the node's JSON answer as it is.
    #[arg(long)]
    json: bool,
}

/// The `/members` answer: this node's id and every live member, as JSON.
pub(crate) fn members_json(router: &Router) -> Option<String> {
    let members = router.members();
    if members.is_empty() {
        return None;
    }
    let list: Vec<serde_json::Value> = members
        .iter()
        .map(|m| {
            serde_json::json!({
                "node": m.node,
                "incarnation": m.incarnation,
                "state": match m.state {
                    MemberState::Alive => "alive",
                    MemberState::Suspect => "suspect",
                    MemberState::Failed => "failed",
                    MemberState::Left => "left",
                },
                "addr": m.addr.map(|a| a.to_string()),
            })
        })
        .collect();
    let body = serde_json::json!({ "node": router.node_id(), "members": list });
    Some(format!("{body}\n"))
}

pub(crate) fn run(args: &MembersArgs) -> Result<(), CliError> {
    let (config, _) = common::load(&args.config)?;
    let path = crate::control::socket_path(&config, &args.config.config);
    if let Some(client) = crate::control::Client::connect(&path)? {
        let body = client.call(&crate::control::Request::Members)?;
        return print_members(&body, args.json, &path.display().to_string());
    }
    let Some(metrics) = &config.metrics else {
        return Err(CliError::usage(format!(
            "{}: no [metrics] section: `herald members` asks the running node over its HTTP \
             side; add [metrics] listen = \"127.0.0.1:9100\" and restart the node",
            args.config.config.display()
        )));
    };
    let mut addr = metrics.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let (status, body) = get(addr, "/members").map_err(|e| {
        CliError::usage(format!(
            "cannot ask the node at {addr} (metrics.listen): {e}; is `herald node` running \
             with this config?"
        ))
    })?;
    if status != 200 {
        return Err(CliError::usage(format!(
            "the node at {addr} answered {status}: {}",
            body.trim()
        )));
    }
    print_members(&body, args.json, &addr.to_string())
}

/// Prints the node's `/members` answer (from `source`) as it is, or as a table.
fn print_members(body: &str, json: bool, source: &str) -> Result<(), CliError> {
    if json {
        print!("{body}");
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| CliError::usage(format!("the node at {source} answered no JSON: {e}")))?;
    let me = value["node"].as_u64().unwrap_or(0);
    let empty = Vec::new();
    let members = value["members"].as_array().unwrap_or(&empty);
    println!(
        "{:<20}  {:<20}  {:<8}  ADDRESS",
        "NODE", "INCARNATION", "STATE"
    );
    for m in members {
        let node = m["node"].as_u64().unwrap_or(0);
        println!(
            "{:<20}  {:<20}  {:<8}  {}{}",
            node,
            m["incarnation"].as_u64().unwrap_or(0),
            m["state"].as_str().unwrap_or("?"),
            m["addr"].as_str().unwrap_or("-"),
            if node == me { "  (this node)" } else { "" }
        );
    }
    println!("{} members", members.len());
    Ok(())
}

/// A plain HTTP/1.0 GET: the status and the body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.take(4 << 20).read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}
