//! The relay's transport per side, chosen at run time: plain (raw_sock)
//! or TLS, per listener (`--tls-cert`) and for the servers
//! (`--server-tls`).
//!
//! [`Xprt`] implements [`Transport`] by a `match` on its variant, so each
//! call is static once the variant is known (no vtable): a plain↔plain
//! stream runs raw_sock's code, splice included, and TLS sides run the TLS
//! transport's. A TLS session is boxed: it is large (rustls buffers), and
//! a plain stream should not carry its size.

#[cfg(feature = "tls")]
use std::sync::Arc;

use std::io;

use anypoll::buffer::Buffer;
use anypoll::connection::Connection;
use anypoll::pipe::Pipe;
use anypoll::raw_sock::SendFlags;
use anypoll::sockops::SockOps;
#[cfg(feature = "tls")]
use anypoll::tls::{rustls, Tls};
use anypoll::transport::{RawSock, Transport};
use anypoll::Ctx;
use anypoll_backends::Poller;

use crate::config::RelayConfig;

/// One side's transport.
#[derive(Debug)]
pub(crate) enum Xprt {
    /// Plain TCP.
    Raw(RawSock),
    /// TLS over TCP.
    #[cfg(feature = "tls")]
    Tls(Box<Tls>),
}

/// The TLS configurations the relay loaded at start-up: one per role.
#[derive(Debug, Clone, Default)]
pub struct TlsContext {
    /// Termination on the listeners.
    #[cfg(feature = "tls")]
    pub front: Option<Arc<rustls::ServerConfig>>,
    /// TLS to the servers.
    #[cfg(feature = "tls")]
    pub back: Option<Arc<rustls::ClientConfig>>,
}

impl Default for Xprt {
    fn default() -> Xprt {
        Xprt::Raw(RawSock)
    }
}

impl TlsContext {
    /// Loads the certificates, keys and CAs the settings name. An error
    /// names the option and the file, and is `InvalidInput` (a settings
    /// error: `anypoll relay` exits 2).
    pub fn load(cfg: &RelayConfig) -> io::Result<TlsContext> {
        #[cfg(feature = "tls")]
        {
            let bad = |opt: &str, e: io::Error| io::Error::new(io::ErrorKind::InvalidInput, format!("{opt}: {e}"));
            let front = match &cfg.tls {
                Some(f) => Some(anypoll::tls::server_config(&f.cert, &f.key).map_err(|e| bad("--tls-cert", e))?),
                None => None,
            };
            let back = match &cfg.server_tls {
                Some(b) => Some(anypoll::tls::client_config(&b.ca).map_err(|e| bad("--ca", e))?),
                None => None,
            };
            Ok(TlsContext { front, back })
        }
        #[cfg(not(feature = "tls"))]
        {
            crate::tls_settings::check_files(cfg.tls.as_ref(), cfg.server_tls.as_ref())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            Ok(TlsContext {})
        }
    }

    /// The transport of an accepted client.
    pub(crate) fn front(&self) -> io::Result<Xprt> {
        #[cfg(feature = "tls")]
        if let Some(c) = &self.front {
            return Ok(Xprt::Tls(Box::new(Tls::server(c.clone())?)));
        }
        Ok(Xprt::Raw(RawSock))
    }

    /// The transport towards a server, verified as `name`.
    pub(crate) fn back(&self, name: &str) -> io::Result<Xprt> {
        #[cfg(feature = "tls")]
        if let Some(c) = &self.back {
            return Ok(Xprt::Tls(Box::new(Tls::client(c.clone(), name)?)));
        }
        let _ = name;
        Ok(Xprt::Raw(RawSock))
    }
}

impl Xprt {
    /// Whether a TLS handshake is still running on this side (false for
    /// plain TCP): the handshake timeout applies while it is.
    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Xprt::Raw(_) => false,
            #[cfg(feature = "tls")]
            Xprt::Tls(t) => t.is_handshaking(),
        }
    }

    /// Drives this side's TLS handshake alone, taking no plaintext (see
    /// [`Tls::handshake`]): whether it still runs afterwards. False at
    /// once for plain TCP, and after a failure (the connection's error
    /// says which).
    pub(crate) fn handshake<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
    ) -> bool {
        match self {
            Xprt::Raw(_) => {
                let _ = (ops, cx, conn);
                false
            }
            #[cfg(feature = "tls")]
            Xprt::Tls(t) => t.handshake(ops, cx, conn),
        }
    }
}

/// `$body` with `$x` bound to the variant's transport.
macro_rules! each {
    ($self:expr, $x:ident => $body:expr) => {
        match $self {
            Xprt::Raw($x) => $body,
            #[cfg(feature = "tls")]
            Xprt::Tls($x) => $body,
        }
    };
}

impl Transport for Xprt {
    #[inline]
    fn name(&self) -> &'static str {
        each!(self, x => x.name())
    }

    #[inline]
    fn hides_readiness(&self) -> bool {
        each!(self, x => x.hides_readiness())
    }

    #[inline]
    fn can_splice(&self) -> bool {
        each!(self, x => x.can_splice())
    }

    #[inline]
    fn init(&mut self, conn: &mut Connection) -> bool {
        each!(self, x => x.init(conn))
    }

    #[inline]
    fn close(&mut self, conn: &mut Connection) -> bool {
        each!(self, x => x.close(conn))
    }

    #[inline]
    fn rcv_buf<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        buf: &mut Buffer,
        max: usize,
    ) -> usize {
        each!(self, x => x.rcv_buf(ops, cx, conn, buf, max))
    }

    #[inline]
    fn snd_buf<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        buf: &mut Buffer,
        max: usize,
        flags: SendFlags,
    ) -> usize {
        each!(self, x => x.snd_buf(ops, cx, conn, buf, max, flags))
    }

    #[inline]
    fn rcv_pipe<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        pipe: &mut Pipe,
        count: usize,
    ) -> usize {
        each!(self, x => x.rcv_pipe(ops, cx, conn, pipe, count))
    }

    #[inline]
    fn snd_pipe<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        pipe: &mut Pipe,
    ) -> usize {
        each!(self, x => x.snd_pipe(ops, cx, conn, pipe))
    }

    #[inline]
    fn shut_write<S: SockOps, P: Poller>(&mut self, ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection) {
        each!(self, x => x.shut_write(ops, cx, conn))
    }

    #[inline]
    fn rcv_pending(&self) -> bool {
        each!(self, x => x.rcv_pending())
    }

    #[inline]
    fn snd_pending(&self) -> bool {
        each!(self, x => x.snd_pending())
    }
}
