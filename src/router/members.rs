//! Membership as the application sees it: the settings, the member list and the changes.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};

use super::{Router, RouterBuilder};
use crate::driver::MemberGlue;
use crate::membership::{
    DnsSeeds, MemberEvent, MemberRecord, Membership, MembershipConfig, Resolver, SystemResolver,
};

/// How a router finds and watches the cluster's other nodes
/// ([`RouterBuilder::membership`]). [`MembershipSettings::default`] gives the defaults.
pub struct MembershipSettings {
    /// Addresses to ask to join (any one reachable is enough). The UDP peers
    /// ([`RouterBuilder::udp_peer`]) count as seeds too.
    pub seeds: Vec<SocketAddr>,
    /// A `host:port` name resolving to seed addresses (a Kubernetes headless Service, a
    /// Consul or Cloud Map name), resolved again every `dns_refresh`.
    pub dns: Option<String>,
    /// How often `dns` is resolved again. Default 30 s.
    pub dns_refresh: Duration,
    /// How often each node probes one member. Default 200 ms.
    pub probe_interval: Duration,
    /// Suspicion timeout multiplier: a suspected member has at least
    /// `suspicion_mult × max(1, log10(members)) × probe_interval` to refute. Default 4.
    pub suspicion_mult: u32,
    /// How often a node exchanges its whole member list with one random member (zero:
    /// never): what heals a partition that outlasted the memory of failed members. Default
    /// 30 s.
    pub sync_interval: Duration,
    /// The resolver for `dns` (default: the system's).
    pub resolver: Option<Box<dyn Resolver>>,
}

impl Default for MembershipSettings {
    fn default() -> Self {
        Self {
            seeds: Vec::new(),
            dns: None,
            dns_refresh: Duration::from_secs(30),
            probe_interval: Duration::from_millis(200),
            suspicion_mult: 4,
            sync_interval: Duration::from_secs(30),
            resolver: None,
        }
    }
}

impl fmt::Debug for MembershipSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MembershipSettings")
            .field("seeds", &self.seeds)
            .field("dns", &self.dns)
            .field("dns_refresh", &self.dns_refresh)
            .field("probe_interval", &self.probe_interval)
            .field("suspicion_mult", &self.suspicion_mult)
            .field("sync_interval", &self.sync_interval)
            .finish_non_exhaustive()
    }
}

impl RouterBuilder {
    /// Runs membership ([`crate::membership`]): the node joins the cluster through its seeds
    /// (or a DNS name), finds every other node, and the transports send to the live members
    /// instead of a fixed peer list. Needs UDP ([`udp_bind`](Self::udp_bind)), which carries
    /// the membership messages.
    pub fn membership(mut self, settings: MembershipSettings) -> Self {
        self.membership = Some(settings);
        self
    }

    /// Checks the membership settings; part of [`check`](Self::check).
    pub(super) fn check_membership(&self) -> Result<(), crate::BuildError> {
        let Some(m) = &self.membership else {
            return Ok(());
        };
        if m.probe_interval < Duration::from_millis(10) {
            return Err(Self::invalid(
                "membership.probe_interval_ms",
                "must be at least 10 ms (200 ms by default)",
            ));
        }
        if m.suspicion_mult == 0 {
            return Err(Self::invalid(
                "membership.suspicion_mult",
                "must be at least 1 (4 by default)",
            ));
        }
        if m.dns.is_some() && m.dns_refresh.is_zero() {
            return Err(Self::invalid(
                "membership.dns_refresh_s",
                "must be more than zero (30 s by default)",
            ));
        }
        Ok(())
    }

    /// With membership and a TCP listener on a fixed port: the distance from this node's UDP
    /// port to its TCP port, which the TCP transport assumes every member keeps, to connect
    /// to each live member ([`TcpConfig::member_port_offset`](crate::transport::TcpConfig)).
    pub(super) fn tcp_member_port_offset(&self) -> Option<i32> {
        self.membership.as_ref()?;
        let (_, udp) = self.membership_udp?;
        let tcp = self.tcp_listen?;
        (tcp.port() != 0).then(|| i32::from(tcp.port()) - i32::from(udp.port()))
    }

    /// The membership the driver runs, for a node whose UDP transport is `udp` (bound at
    /// `bind`).
    pub(super) fn make_membership(
        &mut self,
        node: u64,
        incarnation: u64,
        udp: usize,
        bind: SocketAddr,
        now: Instant,
    ) -> Option<MemberGlue> {
        let settings = self.membership.take()?;
        let mut config = MembershipConfig::new(node, incarnation);
        config.advertise = (!bind.ip().is_unspecified()).then_some(bind);
        config.seeds = settings.seeds;
        config.seeds.extend(self.udp_peers.iter().copied());
        config.seeds.retain(|s| *s != bind);
        // Where the network has multicast, the group is where nodes find each other.
        config.group = self.multicast.map(|(group, _)| SocketAddr::V4(group));
        config.probe_interval = settings.probe_interval;
        config.probe_timeout = settings.probe_interval / 2;
        config.suspicion_mult = settings.suspicion_mult;
        config.sync_interval = settings.sync_interval;
        let dns = settings.dns.map(|name| {
            let resolver = settings
                .resolver
                .unwrap_or_else(|| Box::new(SystemResolver));
            DnsSeeds::new(name, settings.dns_refresh, resolver, now).in_background()
        });
        Some(MemberGlue::new(Membership::new(config, now), dns, udp))
    }
}

impl Router {
    /// The cluster's live (alive or suspect) members as this node sees them, itself
    /// included, by node id. Empty without membership.
    pub fn members(&self) -> Vec<MemberRecord> {
        self.inner
            .members
            .as_ref()
            .map_or_else(Vec::new, |v| v.members.lock().clone())
    }

    /// Membership changes from now on (joined, left, failed, suspected, refuted), with
    /// node id, incarnation and address ([`members`](Self::members) gives who is there
    /// already). The channel holds up to 4096 changes; a receiver that falls further behind
    /// misses the newest. Never sends without membership.
    pub fn member_events(&self) -> Receiver<MemberEvent> {
        let (tx, rx) = bounded(4096);
        if let Some(v) = &self.inner.members {
            v.subscribers.lock().push(tx);
        }
        rx
    }
}
