//! One rank's message switch. Roles run on threads and talk through mailboxes; the router, on
//! the rank's main thread, is the only code that calls MPI (the Funneled threading level):
//! it delivers local messages directly and moves the others over the wire.

use super::messages::{Msg, RoleId, decode, encode};
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a role uses to talk: its inbox and the rank's outbox.
pub struct Mailbox {
    pub id: RoleId,
    rx: Receiver<Msg>,
    out: Sender<(RoleId, Msg)>,
}

impl Mailbox {
    /// Sends `msg` to role `to` (on any rank).
    pub fn send(&self, to: RoleId, msg: Msg) -> anyhow::Result<()> {
        self.out
            .send((to, msg))
            .map_err(|_| anyhow::anyhow!("role {}: the rank's router is gone", self.id))
    }

    /// Waits for the next message.
    pub fn recv(&self) -> anyhow::Result<Msg> {
        self.rx
            .recv()
            .map_err(|_| anyhow::anyhow!("role {}: the rank's router is gone", self.id))
    }

    /// Waits at most `d` for the next message.
    pub fn recv_timeout(&self, d: Duration) -> anyhow::Result<Option<Msg>> {
        match self.rx.recv_timeout(d) {
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                anyhow::bail!("role {}: the rank's router is gone", self.id)
            }
        }
    }
}

/// Byte transport between ranks.
pub trait Wire {
    /// Sends one message to `rank` (may block until the peer receives it).
    fn send(&mut self, rank: u32, bytes: &[u8]);
    /// A message from any rank, if one is waiting.
    fn try_recv(&mut self) -> Option<Vec<u8>>;
}

/// The mailboxes of one rank and the ends the router keeps.
pub struct Switch {
    inboxes: HashMap<RoleId, Sender<Msg>>,
    out_rx: Receiver<(RoleId, Msg)>,
    tap: Option<super::Tap>,
}

impl Switch {
    /// A switch for the given local roles; returns their mailboxes.
    pub fn new(local: &[RoleId]) -> (Switch, Vec<Mailbox>) {
        let (out_tx, out_rx) = channel();
        let mut inboxes = HashMap::new();
        let mut boxes = Vec::new();
        for &id in local {
            let (tx, rx) = channel();
            inboxes.insert(id, tx);
            boxes.push(Mailbox {
                id,
                rx,
                out: out_tx.clone(),
            });
        }
        (
            Switch {
                inboxes,
                out_rx,
                tap: None,
            },
            boxes,
        )
    }

    /// Shows every message to `tap` as it is delivered to a local role (tests and models).
    pub fn tap(&mut self, tap: super::Tap) {
        self.tap = Some(tap);
    }

    fn deliver(&self, to: RoleId, msg: Msg) {
        if let Some(t) = &self.tap {
            t(to, &msg);
        }
        match self.inboxes.get(&to) {
            Some(tx) => {
                if tx.send(msg).is_err() {
                    eprintln!("lclstreamer: message for role {to}, which has already finished");
                }
            }
            None => eprintln!("lclstreamer: message for role {to}, which is not on this rank"),
        }
    }

    /// Moves messages until every local role has finished; returns their results in order.
    ///
    /// `rank_of` maps role ids to ranks; `rank` is this rank. Without a wire every role must be
    /// local.
    pub fn run<T: Default>(
        self,
        rank: u32,
        rank_of: impl Fn(RoleId) -> u32,
        mut wire: Option<&mut dyn Wire>,
        roles: Vec<JoinHandle<anyhow::Result<T>>>,
    ) -> Vec<anyhow::Result<T>> {
        let mut pending: Vec<Option<JoinHandle<anyhow::Result<T>>>> =
            roles.into_iter().map(Some).collect();
        let mut results: Vec<Option<anyhow::Result<T>>> =
            (0..pending.len()).map(|_| None).collect();
        let mut idle_spins = 0u32;
        loop {
            // Checked before draining: whatever a finished role sent is already queued.
            let all_done = pending.iter().flatten().all(|h| h.is_finished());
            let mut busy = false;
            while let Ok(m) = self.out_rx.try_recv() {
                busy = true;
                self.forward(m, rank, &rank_of, &mut wire);
            }
            if let Some(w) = wire.as_deref_mut() {
                while let Some(bytes) = w.try_recv() {
                    busy = true;
                    match decode(&bytes) {
                        Ok((to, msg)) => self.deliver(to, msg),
                        Err(e) => eprintln!("lclstreamer: rank {rank}: {e}"),
                    }
                }
            }
            // A role that failed ends the rank now: the others may be waiting for it forever.
            let mut failed = false;
            for (slot, out) in pending.iter_mut().zip(results.iter_mut()) {
                if slot.as_ref().is_some_and(|h| h.is_finished()) {
                    let r = join(slot.take().expect("checked"));
                    failed |= r.is_err();
                    *out = Some(r);
                }
            }
            if all_done || failed {
                break;
            }
            if busy {
                idle_spins = 0;
            } else {
                // Waits on the local outbox, so a local role's message wakes the router at once;
                // the wire is polled after the nap, which lengthens while nothing moves.
                idle_spins = idle_spins.saturating_add(1);
                let nap = match idle_spins {
                    0..100 => 20,
                    100..1000 => 200,
                    _ => 1000,
                };
                if let Ok(m) = self.out_rx.recv_timeout(Duration::from_micros(nap)) {
                    idle_spins = 0;
                    self.forward(m, rank, &rank_of, &mut wire);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Ok(T::default())))
            .collect()
    }

    fn forward(
        &self,
        (to, msg): (RoleId, Msg),
        rank: u32,
        rank_of: &impl Fn(RoleId) -> u32,
        wire: &mut Option<&mut dyn Wire>,
    ) {
        let dest = rank_of(to);
        if dest == rank {
            self.deliver(to, msg);
        } else if let Some(w) = wire.as_deref_mut() {
            match encode(to, &msg) {
                Ok(bytes) => w.send(dest, &bytes),
                Err(e) => eprintln!("lclstreamer: cannot encode a message for role {to}: {e}"),
            }
        } else {
            eprintln!("lclstreamer: role {to} is on rank {dest} but there is no wire");
        }
    }
}

/// The result of a finished role thread, a panic as an error.
fn join<T>(h: JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join().unwrap_or_else(|p| {
        Err(anyhow::anyhow!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("?")
        ))
    })
}
