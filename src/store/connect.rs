//! How pooled connections are opened and watched, so a database that is down or hung can never
//! hang a request: bounded connect, TCP keepalive and user timeout, server-side statement and
//! idle-in-transaction timeouts, and a reply watchdog on the socket itself.
//!
//! The watchdog is what bounds a *frozen* server (SIGSTOP, a stuck disk, a dead host behind a
//! live kernel): the kernel still accepts and acknowledges our bytes, so neither the server's
//! `statement_timeout` nor TCP timeouts fire. The watched socket counts the requests that expect
//! a `ReadyForQuery` (`Sync`, simple `Query`, the startup message) against the `ReadyForQuery`
//! messages received; while one is owed and the server has sent nothing for `reply_timeout`,
//! reading fails with `TimedOut`. The connection then dies, every query on it fails as
//! "unavailable", and deadpool never hands it out again (`is_closed`).
//!
//! Every pooled connection — its socket and the task that drives it — lives on one runtime of
//! its own ([`drivers`]), not on the runtime of whichever thread first asked the pool for it:
//! an HTTP worker's runtime ends when the server stops, and with it every connection it had
//! opened, so the writes of a graceful shutdown (presence's `last_seen`) failed with
//! "connection closed". A busy worker thread no longer delays other threads' queries either.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

/// Every bound on talking to PostgreSQL (the `FECHATTER_DB_*` knobs).
#[derive(Debug, Clone)]
pub struct DbLimits {
    /// Most pooled connections.
    pub pool_size: usize,
    /// Longest wait for a pooled connection before the request answers 503.
    pub pool_wait: Duration,
    /// Longest time to open a connection (socket and startup handshake).
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout` of every pooled connection (zero: none).
    pub statement_timeout: Duration,
    /// Server-side `idle_in_transaction_session_timeout` (zero: none).
    pub idle_in_transaction_timeout: Duration,
    /// Longest silence of a server that owes a reply before the connection is dropped.
    pub reply_timeout: Duration,
    /// Idle time before TCP keepalive probes start (TCP connections only).
    pub keepalive_idle: Duration,
    /// `TCP_USER_TIMEOUT`: longest time sent data may stay unacknowledged (TCP only).
    pub tcp_user_timeout: Duration,
    /// Most unread messages a chat's `unread_count` counts (it saturates there), so listing
    /// chats never scans a long-unread chat's whole history.
    pub unread_count_max: i64,
}

impl DbLimits {
    /// Defaults for a pool of `pool_size` waiting at most `pool_wait` (tools, benches, tests).
    pub fn new(pool_size: usize, pool_wait: Duration) -> Self {
        DbLimits {
            pool_size,
            pool_wait,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(60),
            reply_timeout: Duration::from_secs(35),
            keepalive_idle: Duration::from_secs(10),
            tcp_user_timeout: Duration::from_secs(10),
            unread_count_max: 10_000,
        }
    }

    /// `pg` with this configuration's server-side timeouts appended to its `options`.
    pub fn apply(&self, mut pg: Config) -> Config {
        let mut options = pg.get_options().unwrap_or_default().to_string();
        for (name, value) in [
            ("statement_timeout", self.statement_timeout),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_timeout,
            ),
        ] {
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&format!("-c {name}={}", value.as_millis()));
        }
        pg.options(&options);
        pg.connect_timeout(self.connect_timeout);
        pg
    }
}

/// deadpool's way of opening a connection: ours, over a [`Watched`] socket.
pub struct WatchedConnect {
    pub limits: DbLimits,
}

/// The runtime pooled connections live on: one thread (`pg-driver`), started on first use and
/// kept for the life of the process. It only moves bytes (queries are encoded and rows decoded
/// by the callers); `None` if its thread could not be started, and connections then stay on
/// the caller's runtime as before.
fn drivers() -> Option<&'static tokio::runtime::Handle> {
    static DRIVERS: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    DRIVERS
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("pg-driver")
                .enable_all()
                .build()
                .map_err(|e| tracing::warn!(error = %e, "no database driver thread"))
                .ok()
        })
        .as_ref()
        .map(|rt| rt.handle())
}

impl Connect for WatchedConnect {
    fn connect(
        &self,
        pg: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let pg = pg.clone();
        let limits = self.limits.clone();
        let open = async move {
            let open = async {
                let socket = open_socket(&pg, &limits).await;
                let watched = Watched::new(socket, limits.reply_timeout);
                pg.connect_raw(watched, NoTls).await
            };
            let (client, connection) =
                tokio::time::timeout(limits.connect_timeout, open)
                    .await
                    .map_err(|_| tokio_postgres::Error::__private_api_timeout())??;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "database connection ended");
                }
            });
            Ok((client, task))
        };
        match drivers() {
            // The socket registers with the runtime it is opened on: open it there too.
            Some(rt) => Box::pin(async move {
                match rt.spawn(open).await {
                    Ok(opened) => opened,
                    // The driver runtime is shutting down (the process is ending): reported as
                    // the connect timeout, the one error tokio-postgres lets us make.
                    Err(_) => Err(tokio_postgres::Error::__private_api_timeout()),
                }
            }),
            None => Box::pin(open),
        }
    }
}

/// Opens a socket to the first reachable host of `pg`. A failure is returned as a socket whose
/// first use fails with the I/O error, so tokio-postgres reports it as its own I/O error.
async fn open_socket(pg: &Config, limits: &DbLimits) -> Socket {
    let hosts = pg.get_hosts();
    let ports = pg.get_ports();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no database host configured");
    for (i, host) in hosts.iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let attempt = match host {
            Host::Unix(dir) => {
                let path: PathBuf = dir.join(format!(".s.PGSQL.{port}"));
                UnixStream::connect(path).await.map(Socket::Unix)
            }
            Host::Tcp(name) => connect_tcp(name, port, limits).await.map(Socket::Tcp),
        };
        match attempt {
            Ok(socket) => return socket,
            Err(e) => last = e,
        }
    }
    Socket::Failed(Some(last))
}

async fn connect_tcp(name: &str, port: u16, limits: &DbLimits) -> io::Result<TcpStream> {
    let stream = TcpStream::connect((name, port)).await?;
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(&stream);
    let idle = limits.keepalive_idle.max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(idle / 2 + Duration::from_millis(500))
        .with_retries(3);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(limits.tcp_user_timeout))?;
    Ok(stream)
}

/// A transport to PostgreSQL.
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// Opening failed: the first read or write returns this error.
    Failed(Option<io::Error>),
}

impl Socket {
    fn failed(err: &mut Option<io::Error>) -> io::Error {
        err.take()
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))
    }
}

/// Counts protocol messages in one direction: 1-byte tag, 4-byte big-endian length (which
/// includes itself), body. The frontend's first message (startup) has no tag.
#[derive(Debug)]
struct Framer {
    /// Bytes of the current message's header seen so far (tag + length).
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current message still to skip.
    remaining: usize,
    /// Whether messages carry a tag byte (false only for the frontend's startup message).
    tagged: bool,
}

impl Framer {
    fn new(tagged: bool) -> Self {
        Framer {
            header: [0; 5],
            header_len: 0,
            remaining: 0,
            tagged,
        }
    }

    /// Feeds `bytes`; calls `on_message(tag)` for each message header completed (`0` for the
    /// untagged startup message).
    fn feed(&mut self, mut bytes: &[u8], mut on_message: impl FnMut(u8)) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(bytes.len());
                self.remaining -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let want = if self.tagged { 5 } else { 4 };
            let take = (want - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len < want {
                return;
            }
            let (tag, len_bytes) = if self.tagged {
                (self.header[0], &self.header[1..5])
            } else {
                (0, &self.header[0..4])
            };
            let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
            self.remaining = (len as usize).saturating_sub(4);
            self.header_len = 0;
            self.tagged = true;
            on_message(tag);
        }
    }
}

/// A socket that fails reads once the server owes a reply and has been silent too long.
pub struct Watched {
    socket: Socket,
    limit: Duration,
    sent: Framer,
    received: Framer,
    /// Requests sent that expect a `ReadyForQuery`, minus those received.
    owed: u64,
    /// Armed while `owed > 0`: the moment the server's silence becomes fatal.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Watched {
    fn new(socket: Socket, limit: Duration) -> Self {
        Watched {
            socket,
            limit,
            sent: Framer::new(false),
            received: Framer::new(true),
            owed: 0,
            deadline: None,
        }
    }

    /// Restarts the silence clock if something is owed, disarms it otherwise, and registers
    /// the task's waker with it (so a silent server wakes the connection at the deadline).
    fn rearm(&mut self, cx: &mut Context<'_>) {
        if self.owed == 0 {
            self.deadline = None;
            return;
        }
        let at = Instant::now() + self.limit;
        match &mut self.deadline {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        if let Some(sleep) = &mut self.deadline {
            let _ = sleep.as_mut().poll(cx);
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.deadline {
            Some(sleep) if self.owed > 0 => sleep.as_mut().poll(cx).is_ready(),
            _ => false,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = match &mut this.socket {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Failed(e) => Poll::Ready(Err(Socket::failed(e))),
        };
        match polled {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    let mut ready = 0;
                    this.received.feed(got, |tag| {
                        if tag == b'Z' {
                            ready += 1;
                        }
                    });
                    this.owed = this.owed.saturating_sub(ready);
                    this.rearm(cx);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the database sent nothing for {} ms while a reply was owed",
                    this.limit.as_millis()
                ),
            ))),
            other => other,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.socket {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, data),
            Socket::Failed(e) => Poll::Ready(Err(Socket::failed(e))),
        };
        if let Poll::Ready(Ok(n)) = polled {
            let mut expects = 0;
            this.sent.feed(&data[..n], |tag| {
                // Startup (untagged), Sync and simple Query are each answered by ReadyForQuery.
                if matches!(tag, 0 | b'S' | b'Q') {
                    expects += 1;
                }
            });
            if expects > 0 {
                let was_owed = this.owed > 0;
                this.owed += expects;
                if !was_owed {
                    this.rearm(cx);
                }
            }
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
            Socket::Failed(e) => Poll::Ready(Err(Socket::failed(e))),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().socket {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Failed(_) => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Framer;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn framer_counts_messages_split_at_any_byte() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&8u32.to_be_bytes());
        stream.extend_from_slice(&196_608u32.to_be_bytes()); // startup, untagged
        stream.extend(msg(b'P', b"SELECT 1\0\0\0"));
        stream.extend(msg(b'S', b""));
        stream.extend(msg(b'Q', b"BEGIN\0"));
        for chunk in 1..stream.len() {
            let mut framer = Framer::new(false);
            let mut tags = Vec::new();
            for piece in stream.chunks(chunk) {
                framer.feed(piece, |t| tags.push(t));
            }
            assert_eq!(tags, vec![0, b'P', b'S', b'Q'], "chunk size {chunk}");
        }
    }
}
