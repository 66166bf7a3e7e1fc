//! Where the load goes: the server's address, which must be on loopback (127.0.0.0/8), and the
//! loopback source addresses client sockets are spread over.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};

/// A loopback server: its HTTP base URL and socket address.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: String,
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `--server`; refuses anything that is not IPv4 loopback.
    pub fn parse(server: &str) -> anyhow::Result<Target> {
        let url = url::Url::parse(server).with_context(|| format!("--server {server}"))?;
        if url.scheme() != "http" {
            bail!("--server must be an http:// URL (got {server})");
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip,
            Some(url::Host::Domain("localhost")) => Ipv4Addr::LOCALHOST,
            _ => bail!("--server must be on IPv4 loopback, 127.0.0.0/8 (got {server})"),
        };
        if !ip.is_loopback() {
            bail!("--server must be on loopback, 127.0.0.0/8 (got {server})");
        }
        let port = url.port().unwrap_or(80);
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        Ok(Target {
            base: format!("http://{addr}"),
            addr,
        })
    }

    /// Parses `--server`/`--url`: one URL or several, comma-separated (clients are spread over
    /// them round robin; set-up and other single-server work use the first).
    pub fn parse_all(servers: &str) -> anyhow::Result<Vec<Target>> {
        let targets = servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Target::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        if targets.is_empty() {
            bail!("--server names no URL");
        }
        Ok(targets)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// Source address of the `i`-th connection: 127.0.0.1 … 127.0.0.`count`, round robin. Each
/// source address has its own ~28k ephemeral ports towards one server address.
pub fn source_ip(i: usize, count: u8) -> Ipv4Addr {
    let count = count.max(1) as usize;
    Ipv4Addr::new(127, 0, 0, 1 + (i % count) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        let t = Target::parse("http://127.0.0.1:8080").expect("loopback");
        assert_eq!(t.ws_url(), "ws://127.0.0.1:8080/ws");
        assert!(Target::parse("http://localhost:9000/").is_ok());
        assert!(Target::parse("http://127.1.2.3:80").is_ok());
        for bad in [
            "http://10.0.0.1:8080",
            "http://example.test:8080",
            "https://127.0.0.1",
            "http://[::1]:8080",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        let all = Target::parse_all("http://127.0.0.1:8080, http://127.0.0.2:8081").expect("two");
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].base, "http://127.0.0.2:8081");
        assert!(Target::parse_all("http://127.0.0.1:1,http://10.0.0.1:2").is_err());
        assert!(Target::parse_all(" , ").is_err());
        assert_eq!(source_ip(0, 4), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_ip(5, 4), Ipv4Addr::new(127, 0, 0, 2));
    }
}
