//! Socket options of accepted connections (set at accept, in `HttpServer::on_connect`): a
//! capped send buffer (`FECHATTER_SOCKET_SEND_BUFFER`) and `TCP_USER_TIMEOUT`
//! (`FECHATTER_SOCKET_USER_TIMEOUT_MS`), so a client that stops reading holds a bounded amount
//! of kernel memory and, once it has acknowledged nothing for the timeout, loses the connection
//! — also after its session was closed as a slow consumer, when the close frame itself can no
//! longer be written.

use std::any::Any;
use std::time::Duration;

use actix_web::rt::net::TcpStream;
use socket2::SockRef;

#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    /// Bytes; 0 leaves the kernel's autotuning.
    pub send_buffer: usize,
    /// `None` leaves the kernel's default.
    pub user_timeout: Option<Duration>,
}

impl SocketOptions {
    pub fn from_config(c: &crate::config::Config) -> Self {
        SocketOptions {
            send_buffer: c.socket_send_buffer,
            user_timeout: (c.socket_user_timeout_ms > 0)
                .then(|| Duration::from_millis(c.socket_user_timeout_ms)),
        }
    }

    /// Applies the options to a freshly accepted TCP connection (other transports are left).
    pub fn apply(&self, io: &dyn Any) {
        let Some(stream) = io.downcast_ref::<TcpStream>() else {
            return;
        };
        let sock = SockRef::from(stream);
        if self.send_buffer > 0
            && let Err(e) = sock.set_send_buffer_size(self.send_buffer)
        {
            tracing::debug!(error = %e, "SO_SNDBUF not set");
        }
        if let Some(t) = self.user_timeout
            && let Err(e) = sock.set_tcp_user_timeout(Some(t))
        {
            tracing::debug!(error = %e, "TCP_USER_TIMEOUT not set");
        }
    }
}

/// A listening socket on `addr`, as actix-web's own `bind` makes one (`SO_REUSEADDR`, then
/// `listen(backlog)`), for a server that binds before it starts anything that a failed bind
/// would have to undo.
pub fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}
