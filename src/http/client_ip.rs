//! The client's address, in one place: the TCP peer, or — only when that peer is a trusted proxy
//! (`FECHATTER_TRUSTED_PROXIES`) — the address it forwarded (`Forwarded: for=`, else the
//! right-most untrusted entry of `X-Forwarded-For`). Rate limits, lock-outs and logs all use it.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::http::header::HeaderMap;
use actix_web::web;

/// One trusted network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The configured trusted proxies (empty: no forwarding header is believed).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Net>);

impl TrustedProxies {
    /// Parses a comma-separated list of IPs and CIDRs (`10.0.0.1, 10.1.0.0/16, ::1`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (ip, prefix) = match item.split_once('/') {
                Some((ip, p)) => (ip, Some(p)),
                None => (item, None),
            };
            let addr: IpAddr = ip
                .parse()
                .map_err(|_| format!("`{item}` is not an IP address or CIDR"))?;
            let addr = canonical(addr);
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("`{item}` has an invalid prefix length"))?,
            };
            nets.push(Net { addr, prefix });
        }
        Ok(TrustedProxies(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client address of a request whose TCP peer is `peer`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        forwarded_for(headers)
            .or_else(|| self.x_forwarded_for(headers))
            .unwrap_or(peer)
    }

    /// The right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries left
    /// of it were written by the client and cannot be believed).
    fn x_forwarded_for(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut chain: Vec<IpAddr> = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let value = value.to_str().ok()?;
            for part in value.split(',') {
                chain.push(canonical(parse_node(part.trim())?));
            }
        }
        let mut last = None;
        for ip in chain.into_iter().rev() {
            last = Some(ip);
            if !self.contains(ip) {
                break;
            }
        }
        last
    }
}

/// The last `for=` of RFC 7239 `Forwarded` (the one our proxy added).
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let mut found = None;
    for value in headers.get_all("forwarded") {
        let value = value.to_str().ok()?;
        for element in value.split(',') {
            for pair in element.split(';') {
                let Some((k, v)) = pair.trim().split_once('=') else {
                    continue;
                };
                if k.trim().eq_ignore_ascii_case("for")
                    && let Some(ip) = parse_node(v.trim().trim_matches('"'))
                {
                    found = Some(canonical(ip));
                }
            }
        }
    }
    found
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `[::1]`, `[::1]:5678`, `::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// The client's address for `req` (loopback if the peer is unknown, as in tests' requests).
pub fn client_ip(req: &HttpRequest) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    match req.app_data::<web::Data<TrustedProxies>>() {
        Some(trusted) if !trusted.is_empty() => trusted.resolve(peer, req.headers()),
        _ => canonical(peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn parses_lists_and_refuses_garbage() {
        let t = TrustedProxies::parse(" 10.0.0.1, 192.168.0.0/16 ,::1,").expect("parse");
        assert!(t.contains(ip("10.0.0.1")));
        assert!(!t.contains(ip("10.0.0.2")));
        assert!(t.contains(ip("192.168.44.3")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("::ffff:192.168.1.1")));
        assert!(TrustedProxies::parse("").expect("empty").is_empty());
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.example").is_err());
        assert!(
            TrustedProxies::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("8.8.8.8"))
        );
    }

    #[test]
    fn headers_count_only_from_trusted_peers() {
        let t = TrustedProxies::parse("10.0.0.1").expect("parse");
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(t.resolve(ip("10.0.0.1"), &h), ip("203.0.113.7"));
        // An untrusted peer's header is ignored.
        assert_eq!(t.resolve(ip("198.51.100.2"), &h), ip("198.51.100.2"));
        // A client-written prefix is skipped: the right-most untrusted entry wins.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.1")]);
        assert_eq!(t.resolve(ip("10.0.0.1"), &h), ip("203.0.113.7"));
        // Forwarded wins over X-Forwarded-For; ports and brackets are accepted.
        let h = headers(&[
            ("forwarded", r#"for="[2001:db8::5]:4711";proto=https"#),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(t.resolve(ip("10.0.0.1"), &h), ip("2001:db8::5"));
        // Garbage falls back to the peer.
        let h = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(t.resolve(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }
}
