//! libzmq sockets (the `zmq` crate) with a live count of connections, read from the socket
//! monitor: a connection counts from `CONNECTED`/`ACCEPTED` until `DISCONNECTED`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::nng_sink::Role;

static MONITORS: AtomicU64 = AtomicU64::new(0);

/// A socket and its monitor.
pub struct ZmqSocket {
    pub socket: zmq::Socket,
    monitor: zmq::Socket,
    pub url: String,
    connections: usize,
    closed: u64,
}

/// Milliseconds for a libzmq timeout option (at least 1).
pub fn ms(d: Duration) -> i32 {
    d.as_millis().clamp(1, i32::MAX as u128) as i32
}

impl ZmqSocket {
    /// Opens a socket of `kind` on `url` (connect for `Dial`, bind for `Listen`); `setup` sets
    /// options before the connect or bind.
    pub fn open(
        ctx: &zmq::Context,
        kind: zmq::SocketType,
        url: &str,
        role: Role,
        setup: impl FnOnce(&zmq::Socket) -> zmq::Result<()>,
    ) -> Result<Self, String> {
        let err = |what: &'static str| move |e: zmq::Error| format!("ZeroMQ {what} {url}: {e}");
        let socket = ctx.socket(kind).map_err(err("socket for"))?;
        setup(&socket).map_err(err("options on"))?;
        let mon = format!(
            "inproc://lclstreamer-monitor-{}-{}",
            std::process::id(),
            MONITORS.fetch_add(1, Ordering::Relaxed)
        );
        let events = zmq::SocketEvent::CONNECTED.to_raw()
            | zmq::SocketEvent::ACCEPTED.to_raw()
            | zmq::SocketEvent::DISCONNECTED.to_raw();
        socket
            .monitor(&mon, events as i32)
            .map_err(err("monitor of"))?;
        let monitor = ctx.socket(zmq::PAIR).map_err(err("monitor socket for"))?;
        monitor.connect(&mon).map_err(err("monitor of"))?;
        match role {
            Role::Dial => socket.connect(url).map_err(err("connect to"))?,
            Role::Listen => socket.bind(url).map_err(err("bind"))?,
        }
        Ok(ZmqSocket {
            socket,
            monitor,
            url: url.to_owned(),
            connections: 0,
            closed: 0,
        })
    }

    /// Reads pending monitor events; returns the number of open connections.
    pub fn connections(&mut self) -> usize {
        while let Ok(parts) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            let Some(ev) = parts.first().filter(|p| p.len() >= 2) else {
                continue;
            };
            match zmq::SocketEvent::from_raw(u16::from_le_bytes([ev[0], ev[1]])) {
                zmq::SocketEvent::CONNECTED | zmq::SocketEvent::ACCEPTED => self.connections += 1,
                zmq::SocketEvent::DISCONNECTED => {
                    self.connections = self.connections.saturating_sub(1);
                    self.closed += 1;
                }
                _ => {}
            }
        }
        self.connections
    }

    /// Connections closed so far.
    pub fn closed(&mut self) -> u64 {
        self.connections();
        self.closed
    }

    /// Waits until no connection is left, or `timeout`; true if none is left.
    pub fn wait_zero(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.connections() > 0 {
            if Instant::now() >= end {
                return false;
            }
            let _ = self.monitor.poll(zmq::POLLIN, 50);
        }
        true
    }

    /// Waits until a connection is open, or `timeout`; true if one is.
    pub fn wait_connected(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.connections() == 0 {
            if Instant::now() >= end {
                return false;
            }
            let _ = self.monitor.poll(zmq::POLLIN, 50);
        }
        true
    }
}
