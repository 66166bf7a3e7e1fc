//! The NATS server's WebSocket listener as a fan-out baseline (`fanout --nats-ws-url`): the
//! client side of NATS's text protocol (`INFO`, `CONNECT`, `SUB`, `PUB`, `MSG`, `PING`/`PONG`,
//! `+OK`/`-ERR`) over the same tokio-tungstenite connections the Fechatter clients use.
//!
//! A receiver subscribes to one subject and is ready once the server answered the `PING` sent
//! after its `SUB` (the server handles a connection's operations in order, so the subscription
//! is in place: the analogue of `auth.success`). The publisher sends `PUB` then `PING` and
//! counts a message as acknowledged at the `PONG` (the analogue of the 201: the server has
//! handed the message to every subscriber's outbound buffer). The payload is the
//! `message.created` frame the actix-ws baseline broadcasts, so every receiver checks it with
//! the same parser and checker.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::target::{Target, source_ip};
use super::wsclient::{self, Dial, Ws};

/// What a client tells the server in `CONNECT`: no `+OK` per operation, no headers.
const CONNECT: &str = r#"CONNECT {"verbose":false,"pedantic":false,"protocol":1,"headers":false,"no_responders":false,"lang":"rust","version":"fechatter-load","name":"fechatter-load"}"#;

/// A NATS WebSocket listener on loopback, from `ws://127.0.0.1:PORT` (refuses anything else).
pub fn parse_target(url: &str) -> anyhow::Result<Target> {
    let parsed = url::Url::parse(url).with_context(|| format!("--nats-ws-url {url}"))?;
    if parsed.scheme() != "ws" {
        bail!(
            "--nats-ws-url must be a ws:// URL (the server's websocket listener, no TLS; got {url})"
        );
    }
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip,
        Some(url::Host::Domain("localhost")) => Ipv4Addr::LOCALHOST,
        _ => bail!("--nats-ws-url must be on IPv4 loopback, 127.0.0.0/8 (got {url})"),
    };
    if !ip.is_loopback() {
        bail!("--nats-ws-url must be on loopback, 127.0.0.0/8 (got {url})");
    }
    let addr = SocketAddr::new(IpAddr::V4(ip), parsed.port().unwrap_or(80));
    Ok(Target {
        base: format!("ws://{addr}/"),
        addr,
    })
}

/// One server operation, as far as a subscriber or a publisher cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    /// `MSG <subject> <sid> [reply] <bytes>` and its payload.
    Msg(Bytes),
    Ping,
    Pong,
    /// `-ERR '<text>'`.
    Err(String),
    /// `INFO`, `+OK`: nothing to do.
    Other,
}

/// Splits the server's byte stream into operations. The protocol is a stream: a WebSocket
/// frame may hold several operations or end inside one, so bytes wait here until complete.
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    /// Adds `bytes` and returns every operation completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<Op>> {
        self.buf.extend_from_slice(bytes);
        let mut ops = Vec::new();
        let mut at = 0;
        while let Some(end) = find_crlf(&self.buf[at..]) {
            let line = &self.buf[at..at + end];
            let body_start = at + end + 2;
            if let Some(rest) = line.strip_prefix(b"MSG ") {
                let len = std::str::from_utf8(rest)
                    .ok()
                    .and_then(|r| r.split_ascii_whitespace().last())
                    .and_then(|n| n.parse::<usize>().ok())
                    .with_context(|| format!("bad MSG line: {}", String::from_utf8_lossy(line)))?;
                if self.buf.len() < body_start + len + 2 {
                    break; // the payload has not all arrived
                }
                ops.push(Op::Msg(Bytes::copy_from_slice(
                    &self.buf[body_start..body_start + len],
                )));
                at = body_start + len + 2;
                continue;
            }
            ops.push(match line {
                b"PING" => Op::Ping,
                b"PONG" => Op::Pong,
                l if l.starts_with(b"-ERR") => Op::Err(String::from_utf8_lossy(l).into_owned()),
                _ => Op::Other,
            });
            at = body_start;
        }
        self.buf.drain(..at);
        Ok(ops)
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

fn frame(text: String) -> Message {
    Message::Binary(Bytes::from(text))
}

/// The bytes of a server frame (the server sends binary frames; text is accepted too).
pub fn frame_bytes(msg: &Message) -> Option<&[u8]> {
    match msg {
        Message::Binary(b) => Some(b),
        Message::Text(t) => Some(t.as_bytes()),
        _ => None,
    }
}

/// Connection number `i`: WebSocket handshake from its source address, `CONNECT`, then
/// `SUB subject` when given, and a `PING` whose `PONG` says all of it is in place.
pub async fn open(dial: &Dial, i: usize, subject: Option<&str>) -> anyhow::Result<Ws> {
    let target = &dial.targets[i % dial.targets.len()];
    let source = source_ip(i, dial.source_ips);
    let mut ws = wsclient::handshake(dial, target.addr, target.base.as_str(), source).await?;
    let mut hello = format!("{CONNECT}\r\n");
    if let Some(s) = subject {
        hello.push_str(&format!("SUB {s} 1\r\n"));
    }
    hello.push_str("PING\r\n");
    ws.send(frame(hello)).await.context("CONNECT")?;
    let mut parser = Parser::default();
    await_pong(&mut ws, &mut parser).await?;
    Ok(ws)
}

/// Reads until the server's `PONG`, answering its `PING`s; an `-ERR` or the end is an error.
async fn await_pong(ws: &mut Ws, parser: &mut Parser) -> anyhow::Result<()> {
    loop {
        let msg = match ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => bail!("before PONG: {e}"),
            None => bail!("closed before PONG"),
        };
        if let Message::Close(_) = msg {
            bail!("closed before PONG");
        }
        let Some(bytes) = frame_bytes(&msg) else {
            continue;
        };
        for op in parser.feed(bytes)? {
            match op {
                Op::Pong => return Ok(()),
                Op::Ping => ws.send(frame("PONG\r\n".into())).await.context("PONG")?,
                Op::Err(e) => bail!("refused: {e}"),
                Op::Msg(_) | Op::Other => {}
            }
        }
    }
}

/// The publishing connection: each message is acknowledged by the `PONG` after it.
pub struct Publisher {
    ws: Ws,
    parser: Parser,
}

impl Publisher {
    pub async fn open(dial: &Dial, i: usize) -> anyhow::Result<Publisher> {
        Ok(Publisher {
            ws: open(dial, i, None).await?,
            parser: Parser::default(),
        })
    }

    /// `PUB subject` with `payload`, then waits for the server to have handled it.
    pub async fn publish(&mut self, subject: &str, payload: &str) -> anyhow::Result<()> {
        let op = format!("PUB {subject} {}\r\n{payload}\r\nPING\r\n", payload.len());
        self.ws.send(frame(op)).await.context("PUB")?;
        await_pong(&mut self.ws, &mut self.parser).await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The answer to a server `PING`.
pub fn pong() -> Message {
    frame("PONG\r\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operations_split_anywhere() {
        let stream = b"INFO {\"server_id\":\"x\"}\r\nPING\r\nMSG fanout.1 1 5\r\nhello\r\n\
                       +OK\r\nMSG a 1 reply.x 2\r\n\r\n\r\nPONG\r\n-ERR 'Slow Consumer'\r\n";
        let whole = Parser::default().feed(stream).expect("parse");
        let expected = vec![
            Op::Other,
            Op::Ping,
            Op::Msg(Bytes::from_static(b"hello")),
            Op::Other,
            Op::Msg(Bytes::from_static(b"\r\n")),
            Op::Pong,
            Op::Err("-ERR 'Slow Consumer'".into()),
        ];
        assert_eq!(whole, expected);
        // Every split point gives the same operations.
        for cut in 0..stream.len() {
            let mut p = Parser::default();
            let mut ops = p.feed(&stream[..cut]).expect("first part");
            ops.extend(p.feed(&stream[cut..]).expect("second part"));
            assert_eq!(ops, expected, "cut at {cut}");
            assert!(p.buf.is_empty());
        }
        assert!(Parser::default().feed(b"MSG a 1 x\r\n").is_err());
    }

    /// A real nats-server (when installed; `scripts/test` installs Debian's package): three
    /// subscribers through the same reader the fan-out uses, five acknowledged publishes, every
    /// one delivered once and in order to each.
    #[tokio::test]
    async fn real_server_fans_out_to_every_subscriber() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicU64;
        use std::time::Duration;

        use super::super::checker::{self, Acked, Stamp, StreamKey};
        use super::super::latency::SharedLatency;
        use super::super::wsclient::{self, Protocol, ReaderShared};

        if std::process::Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!(
                "SKIPPED real_server_fans_out_to_every_subscriber: nats-server not installed"
            );
            return;
        }
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        let (port, ws_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nwebsocket {{\n listen: \"127.0.0.1:{ws_port}\"\n no_tls: true\n}}\n"
            ),
        )
        .expect("config");
        let _server = tokio::process::Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        let subject = "fechatter.test".to_string();
        let dial = Dial {
            targets: vec![parse_target(&format!("ws://127.0.0.1:{ws_port}")).expect("url")],
            source_ips: 1,
            read_buffer: 4096,
            protocol: Protocol::Nats {
                subject: subject.clone(),
            },
        };
        // The listener is up when a connection succeeds (poll with a deadline).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut publisher = loop {
            match Publisher::open(&dial, 3).await {
                Ok(p) => break p,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("nats-server did not come up: {e:#}"),
            }
        };
        let shared = ReaderShared {
            run: 7,
            delivered: Arc::new(AtomicU64::new(0)),
            latency: SharedLatency::default(),
            keep_arrivals: false,
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut readers = Vec::new();
        for i in 0..3 {
            let ws = wsclient::open(&dial, i, "unused")
                .await
                .expect("subscriber");
            readers.push(tokio::spawn(wsclient::read_until(
                ws,
                vec![1],
                shared.clone(),
                dial.protocol.clone(),
                stop_rx.clone(),
            )));
        }
        let mut acked = Acked::default();
        for n in 0..5 {
            let stamp = Stamp {
                run: 7,
                sender: 1,
                n,
                sent_nanos: 0,
            };
            let (_, frame) = super::super::baseline::created(n as i64, 1, &stamp.content(200));
            publisher
                .publish(&subject, &frame)
                .await
                .expect("acknowledged");
            acked.insert(StreamKey { room: 1, sender: 1 }, n);
        }
        wsclient::drain(&shared.delivered, 15, Duration::from_secs(10)).await;
        let _ = stop_tx.send(true);
        publisher.close().await;
        let mut logs = Vec::new();
        for r in readers {
            let outcome = r.await.expect("reader");
            assert_eq!(outcome.ended_early, None);
            logs.push(outcome.log);
        }
        let tally = checker::tally(&acked, logs.iter());
        assert_eq!((tally.expected, tally.delivered), (15, 15));
        assert!(tally.is_clean(), "{tally:?}");
    }

    #[test]
    fn only_loopback_websocket_urls() {
        let t = parse_target("ws://127.0.0.1:14223").expect("loopback");
        assert_eq!(t.base, "ws://127.0.0.1:14223/");
        for bad in [
            "nats://127.0.0.1:4222",
            "ws://10.0.0.1:14223",
            "wss://127.0.0.1:1",
            "ws://[::1]:1",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
