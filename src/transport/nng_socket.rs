//! A minimal safe wrapper over NNG 1.11 (`nng-sys` 0.3) for the two sockets we need:
//! Push0 (sink) and Pull0 (consumer), with options, non-blocking dial, listen, copy-in send,
//! zero-copy receive and a live count of connected pipes.
//!
//! NNG 1.11 is used instead of the `nng` 1.0.1 crate's vendored NNG 1.4.0, which aborted with
//! `pthread_mutex_lock: Invalid argument` when a consumer closed mid-stream.

use std::ffi::{CStr, CString, c_int, c_void};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nng_sys as sys;

/// An NNG error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NngError(pub c_int);

impl NngError {
    /// True for `NNG_ETIMEDOUT`.
    pub fn is_timeout(&self) -> bool {
        self.0 == sys::NNG_ETIMEDOUT as c_int
    }
}

impl std::fmt::Display for NngError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: nng_strerror returns a static NUL-terminated string.
        let s = unsafe { CStr::from_ptr(sys::nng_strerror(self.0)) };
        write!(f, "{} (NNG error {})", s.to_string_lossy(), self.0)
    }
}

impl std::error::Error for NngError {}

fn check(rv: c_int) -> Result<(), NngError> {
    if rv == 0 { Ok(()) } else { Err(NngError(rv)) }
}

/// Number of connected pipes, updated by NNG's pipe callbacks.
#[derive(Default)]
pub struct PipeCount {
    n: Mutex<usize>,
    removed: std::sync::atomic::AtomicU64,
    cv: Condvar,
}

impl PipeCount {
    /// Current number of connections.
    pub fn get(&self) -> usize {
        *self.n.lock().unwrap()
    }

    /// Connections closed so far.
    pub fn removed(&self) -> u64 {
        self.removed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until no connection is left, or `timeout`; true if none is left.
    pub fn wait_zero(&self, timeout: Duration) -> bool {
        let n = self.n.lock().unwrap();
        let (n, _) = self.cv.wait_timeout_while(n, timeout, |n| *n > 0).unwrap();
        *n == 0
    }
}

unsafe extern "C" fn pipe_cb(_: sys::nng_pipe, ev: sys::nng_pipe_ev, arg: *mut c_void) {
    // SAFETY: arg is the PipeCount owned by the socket, alive until after nng_close returns.
    let pc = unsafe { &*(arg as *const PipeCount) };
    let mut n = pc.n.lock().unwrap_or_else(|e| e.into_inner());
    match ev {
        sys::NNG_PIPE_EV_ADD_POST => *n += 1,
        sys::NNG_PIPE_EV_REM_POST => {
            *n = n.saturating_sub(1);
            pc.removed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        _ => return,
    }
    pc.cv.notify_all();
}

/// A received message (owned NNG buffer; freed on drop).
pub struct NngMsg(*mut sys::nng_msg);

// SAFETY: an nng_msg is a plain heap buffer owned by this value.
unsafe impl Send for NngMsg {}

impl std::ops::Deref for NngMsg {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: body/len describe the message's valid bytes.
        unsafe {
            std::slice::from_raw_parts(
                sys::nng_msg_body(self.0) as *const u8,
                sys::nng_msg_len(self.0),
            )
        }
    }
}

impl Drop for NngMsg {
    fn drop(&mut self) {
        // SAFETY: we own the message.
        unsafe { sys::nng_msg_free(self.0) }
    }
}

/// An open Push0 or Pull0 socket; closed on drop.
pub struct NngSocket {
    raw: sys::nng_socket,
    pipes: Arc<PipeCount>,
}

// SAFETY: NNG sockets are thread-safe handles.
unsafe impl Send for NngSocket {}
unsafe impl Sync for NngSocket {}

impl NngSocket {
    fn open(f: unsafe extern "C" fn(*mut sys::nng_socket) -> c_int) -> Result<Self, NngError> {
        let mut raw = sys::nng_socket::default();
        // SAFETY: raw is a valid out-pointer.
        check(unsafe { f(&mut raw) })?;
        let s = NngSocket {
            raw,
            pipes: Arc::default(),
        };
        let arg = Arc::as_ptr(&s.pipes) as *mut c_void;
        for ev in [sys::NNG_PIPE_EV_ADD_POST, sys::NNG_PIPE_EV_REM_POST] {
            // SAFETY: the callback and its argument live as long as the socket.
            check(unsafe { sys::nng_pipe_notify(raw, ev, Some(pipe_cb), arg) })?;
        }
        Ok(s)
    }

    /// A Push0 (sender) socket.
    pub fn push() -> Result<Self, NngError> {
        Self::open(sys::nng_push0_open)
    }

    /// A Pull0 (receiver) socket.
    pub fn pull() -> Result<Self, NngError> {
        Self::open(sys::nng_pull0_open)
    }

    fn set_ms(&self, opt: &[u8], d: Option<Duration>) -> Result<(), NngError> {
        let ms = d
            .map(|d| d.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(-1);
        // SAFETY: opt is a NUL-terminated option name from nng-sys.
        check(unsafe { sys::nng_socket_set_ms(self.raw, opt.as_ptr() as *const _, ms) })
    }

    /// Send timeout (`None`: wait forever).
    pub fn set_send_timeout(&self, d: Option<Duration>) -> Result<(), NngError> {
        self.set_ms(sys::NNG_OPT_SENDTIMEO, d)
    }

    /// Receive timeout (`None`: wait forever).
    pub fn set_recv_timeout(&self, d: Option<Duration>) -> Result<(), NngError> {
        self.set_ms(sys::NNG_OPT_RECVTIMEO, d)
    }

    /// Reconnect back-off range of dialers.
    pub fn set_reconnect(&self, min: Duration, max: Duration) -> Result<(), NngError> {
        self.set_ms(sys::NNG_OPT_RECONNMINT, Some(min))?;
        self.set_ms(sys::NNG_OPT_RECONNMAXT, Some(max))
    }

    /// Largest message accepted; larger ones close their connection (0 = unlimited).
    pub fn set_recv_max_size(&self, bytes: usize) -> Result<(), NngError> {
        // SAFETY: valid option name.
        check(unsafe {
            sys::nng_socket_set_size(self.raw, sys::NNG_OPT_RECVMAXSZ.as_ptr() as *const _, bytes)
        })
    }

    /// Dials `url` in the background (retrying until a peer listens).
    pub fn dial(&self, url: &str) -> Result<(), NngError> {
        let u = CString::new(url).map_err(|_| NngError(sys::NNG_EADDRINVAL as c_int))?;
        // SAFETY: valid socket and NUL-terminated URL.
        check(unsafe {
            sys::nng_dial(
                self.raw,
                u.as_ptr(),
                std::ptr::null_mut(),
                sys::NNG_FLAG_NONBLOCK as c_int,
            )
        })
    }

    /// Listens on `url`.
    pub fn listen(&self, url: &str) -> Result<(), NngError> {
        let u = CString::new(url).map_err(|_| NngError(sys::NNG_EADDRINVAL as c_int))?;
        // SAFETY: valid socket and NUL-terminated URL.
        check(unsafe { sys::nng_listen(self.raw, u.as_ptr(), std::ptr::null_mut(), 0) })
    }

    /// Sends a copy of `data` (blocks up to the send timeout).
    pub fn send(&self, data: &[u8]) -> Result<(), NngError> {
        // SAFETY: NNG copies `data` into a new message when no ALLOC flag is given.
        check(unsafe { sys::nng_send(self.raw, data.as_ptr() as *mut c_void, data.len(), 0) })
    }

    /// Receives one message (blocks up to the receive timeout).
    pub fn recv(&self) -> Result<NngMsg, NngError> {
        let mut m = std::ptr::null_mut();
        // SAFETY: m is a valid out-pointer; on success we own the message.
        check(unsafe { sys::nng_recvmsg(self.raw, &mut m, 0) })?;
        Ok(NngMsg(m))
    }

    /// The live connection count.
    pub fn pipes(&self) -> &PipeCount {
        &self.pipes
    }
}

impl Drop for NngSocket {
    fn drop(&mut self) {
        // SAFETY: closing a socket we own; no callback runs after nng_close returns.
        unsafe { sys::nng_close(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pull_over_inproc_with_pipe_counts() {
        let pull = NngSocket::pull().unwrap();
        pull.listen("inproc://lclstreamer-nng-socket-test").unwrap();
        let push = NngSocket::push().unwrap();
        push.set_send_timeout(Some(Duration::from_secs(2))).unwrap();
        push.dial("inproc://lclstreamer-nng-socket-test").unwrap();
        push.send(b"hello").unwrap();
        assert_eq!(&*pull.recv().unwrap(), b"hello");
        assert_eq!(push.pipes().get(), 1);
        drop(pull);
        assert!(push.pipes().wait_zero(Duration::from_secs(2)));
        let e = NngSocket::push().unwrap().listen("bogus://x").unwrap_err();
        assert!(e.to_string().contains("NNG error"), "{e}");
    }
}
