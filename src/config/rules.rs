//! The rules a config must follow beyond its schema. Those of the router's settings are the
//! builder's own ([`RouterBuilder::check`]) and those of the service the service's own
//! ([`ServiceConfig::problems`]), run here under the config's key names: `herald check`
//! applies exactly what `herald node` does.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::{Address, Config};
use crate::error::{ConfigError, ConfigErrors};
use crate::router::settings::config_key;
use crate::router::{Router, RouterBuilder};
use crate::service::ServiceConfig;

/// The config's addresses, looked up.
#[derive(Debug, Default)]
struct Resolved {
    udp_bind: Option<SocketAddr>,
    udp_peers: Vec<SocketAddr>,
    tcp_listen: Option<SocketAddr>,
    tcp_peers: Vec<SocketAddr>,
}

impl Config {
    /// Every problem that needs no lookup: the builder's and the service's rules over the
    /// settings that are not addresses, and what only a config can get wrong (an empty
    /// section, two listeners on one address).
    pub(super) fn problems(&self) -> Vec<ConfigError> {
        let mut errors: Vec<ConfigError> = match self.builder_with(None).check() {
            Ok(()) => Vec::new(),
            Err(e) => e.iter().map(renamed).collect(),
        };
        let mut bad = |key: &str, problem: &str| {
            errors.push(ConfigError {
                key: key.to_owned(),
                problem: problem.to_owned(),
            });
        };
        if let Some(udp) = &self.udp
            && udp.bind.is_none()
            && udp.multicast.is_none()
        {
            bad(
                "udp.bind",
                "missing: set the address to receive on (or a udp.multicast group)",
            );
        }
        if self.membership.is_some()
            && self
                .udp
                .as_ref()
                .is_none_or(|u| u.bind.is_none() && u.multicast.is_none())
        {
            bad(
                "membership",
                "needs UDP: set udp.bind or a udp.multicast group (membership messages travel over UDP)",
            );
        }
        if let Some(tcp) = &self.tcp
            && tcp.listen.is_none()
            && tcp.peers.is_empty()
        {
            bad(
                "tcp",
                "the section is empty, so TCP carries nothing: set tcp.listen to receive from peers, tcp.peers to send to them, or remove [tcp]",
            );
        }
        if self.udp.is_none() && self.tcp.is_none() && self.nats.is_none() {
            bad(
                "udp",
                "no transport: add a [udp], [tcp] or [nats] section so the node can reach its peers",
            );
        }
        if let Some(e) = self
            .nats
            .as_ref()
            .and_then(|n| n.check(&self.cluster).err())
        {
            bad(&e.key, &e.problem);
        }
        if let Some(svc) = &self.service {
            if svc.password.is_some() && svc.password_file.is_some() {
                bad(
                    "service.password_file",
                    "give either service.password or service.password_file, not both",
                );
            }
            let unbound = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
            errors.extend(
                self.service_settings(unbound, svc.password.clone())
                    .problems(),
            );
        }
        // The TCP listeners: two on one address cannot both bind.
        let mut listeners: Vec<(&str, Address)> = Vec::new();
        if let Some(a) = self.tcp.as_ref().and_then(|t| t.listen.clone()) {
            listeners.push(("tcp.listen", a));
        }
        if let Some(svc) = &self.service {
            listeners.push(("service.listen", svc.listen.clone()));
        }
        if let Some(m) = &self.metrics {
            listeners.push(("metrics.listen", Address::from(m.listen)));
        }
        for (i, (key, addr)) in listeners.iter().enumerate() {
            if let Some((first, _)) = listeners[..i].iter().find(|(_, a)| a == addr) {
                errors.push(ConfigError {
                    key: (*key).to_owned(),
                    problem: format!(
                        "{addr} is also {first}: two listeners cannot share an address, give each its own port"
                    ),
                });
            }
        }
        errors
    }

    /// A router builder with these settings, its host names looked up (keyring not included:
    /// give it the secret file or a keyring). Runs the builder's rules on the addresses:
    /// this node's own address among its peers, a peer listed twice, a multicast group
    /// outside 224.0.0.0/4, a frame too large for UDP.
    ///
    /// # Errors
    ///
    /// [`ConfigErrors`] naming each address that does not resolve, or each rule broken.
    pub fn router_builder(&self) -> Result<RouterBuilder, ConfigErrors> {
        let resolved = self.resolve()?;
        let builder = self.builder_with(Some(&resolved));
        match builder.check() {
            Ok(()) => Ok(builder),
            Err(e) => Err(ConfigErrors::new(e.iter().map(renamed).collect())),
        }
    }

    fn resolve(&self) -> Result<Resolved, ConfigErrors> {
        let mut errors = Vec::new();
        let mut look_up = |key: String, a: &Address| match a.resolve() {
            Ok(addr) => Some(addr),
            Err(e) => {
                errors.push(ConfigError {
                    key,
                    problem: format!(
                        "cannot resolve {}: {e}; give an IP address, or a name this host can look up",
                        a.host()
                    ),
                });
                None
            }
        };
        let mut r = Resolved::default();
        if let Some(udp) = &self.udp {
            r.udp_bind = udp
                .bind
                .as_ref()
                .and_then(|a| look_up("udp.bind".into(), a));
            for (i, p) in udp.peers.iter().enumerate() {
                r.udp_peers.extend(look_up(format!("udp.peers[{i}]"), p));
            }
        }
        if let Some(tcp) = &self.tcp {
            r.tcp_listen = tcp
                .listen
                .as_ref()
                .and_then(|a| look_up("tcp.listen".into(), a));
            for (i, p) in tcp.peers.iter().enumerate() {
                r.tcp_peers.extend(look_up(format!("tcp.peers[{i}]"), p));
            }
        }
        if errors.is_empty() {
            Ok(r)
        } else {
            Err(ConfigErrors::new(errors))
        }
    }

    /// The builder with every setting but the addresses, and those of `resolved` if given.
    fn builder_with(&self, resolved: Option<&Resolved>) -> RouterBuilder {
        let t = &self.timing;
        let mut b = Router::builder()
            .cluster(&self.cluster)
            .security(self.security)
            .max_frame_len(self.max_frame_len)
            .ring_capacity(self.ring.capacity)
            .heartbeat_interval(Duration::from_millis(t.heartbeat_ms))
            .dead_peer_timeout(Duration::from_millis(t.dead_peer_ms))
            .clock_skew(Duration::from_millis(t.clock_skew_ms))
            .reorder_window(Duration::from_millis(t.reorder_ms))
            .send_on_raise(self.latency.send_on_raise)
            .busy_poll(Duration::from_micros(self.latency.busy_poll_us))
            .dispatch_on_driver(self.latency.dispatch_on_driver)
            .recovery(self.recovery.to_recovery())
            .linger(Duration::from_millis(self.recovery.linger_ms));
        #[cfg(feature = "nats")]
        if let Some(nats) = &self.nats {
            b = b.nats(nats.transport_config(Path::new("")));
        }
        if let Some(id) = self.node_id {
            b = b.node_id(id);
        }
        if let Some(m) = self.udp.as_ref().and_then(|u| u.multicast.as_ref()) {
            b = b.udp_multicast(m.group, m.interface);
        }
        if let Some(m) = &self.membership {
            b = b.membership(crate::MembershipSettings {
                seeds: m.seeds.clone(),
                dns: m.dns.clone(),
                dns_refresh: Duration::from_secs(m.dns_refresh_s),
                probe_interval: Duration::from_millis(m.probe_interval_ms),
                suspicion_mult: m.suspicion_mult,
                sync_interval: Duration::from_secs(m.sync_interval_s),
                resolver: None,
            });
        }
        if let Some(r) = resolved {
            if let Some(bind) = r.udp_bind {
                b = b.udp_bind(bind);
            }
            for p in &r.udp_peers {
                b = b.udp_peer(*p);
            }
            if let Some(listen) = r.tcp_listen {
                b = b.tcp_listen(listen);
            }
            for p in &r.tcp_peers {
                b = b.tcp_peer(*p);
            }
        }
        b
    }

    fn service_settings(&self, listen: SocketAddr, password: Option<String>) -> ServiceConfig {
        let mut config = ServiceConfig::new(listen);
        if let Some(svc) = &self.service {
            config.password = password;
            config.idle_timeout = Some(Duration::from_millis(svc.idle_timeout_ms));
            config.output_buffer_limit = svc.output_buffer_limit;
            config.max_connections = svc.max_connections;
            config.max_subscriptions_per_client = svc.max_subscriptions_per_client;
            config.max_name_len = svc.max_name_len;
            config.name_memory_limit = svc.name_memory_limit;
            config.event_names.clone_from(&svc.event_names);
        }
        config
    }

    /// The subscription service's settings, if the config has a `[service]` section: looks
    /// up `service.listen` and reads `service.password_file` (relative to `config_dir`).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `service.listen` when it does not resolve, or
    /// `service.password_file` when it cannot be read, is empty, or group or others may
    /// access it.
    pub fn service_config(&self, config_dir: &Path) -> Result<Option<ServiceConfig>, ConfigError> {
        let Some(svc) = &self.service else {
            return Ok(None);
        };
        let listen = svc.listen.resolve().map_err(|e| ConfigError {
            key: "service.listen".into(),
            problem: format!("cannot resolve {}: {e}", svc.listen.host()),
        })?;
        let password = match &svc.password_file {
            Some(file) => Some(read_password(&config_dir.join(file))?),
            None => svc.password.clone(),
        };
        let mut config = self.service_settings(listen, password);
        config.tls = super::service::service_tls(svc, config_dir)?;
        Ok(Some(config))
    }
}

/// The first line of a password file that only its owner may read.
fn read_password(path: &Path) -> Result<String, ConfigError> {
    let bad = |problem: String| ConfigError {
        key: "service.password_file".into(),
        problem,
    };
    // The same rule as the cluster's secret file: a password others can read is no password.
    if let Some(mode) = std::fs::metadata(path)
        .ok()
        .and_then(|meta| crate::auth::too_open(&meta, path))
    {
        return Err(bad(format!(
            "{} has mode {mode:o}, so others may read it: run chmod 600 on it",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let first = text.lines().next().unwrap_or_default().to_owned();
    if first.is_empty() {
        return Err(bad(format!(
            "{} is empty: put the password on its first line",
            path.display()
        )));
    }
    Ok(first)
}

/// A builder error under the config's key.
fn renamed(e: &ConfigError) -> ConfigError {
    ConfigError {
        key: config_key(&e.key),
        problem: e.problem.clone(),
    }
}
