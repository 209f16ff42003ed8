//! Transport: sinks for serialised batches (NNG Push0, files, spill directory), the
//! end-of-stream message, and the consumer side (`lclstreamer pull`, `lclstreamer push`).
//!
//! A sink receives each batch image with its [`MessageMeta`]; `finish` delivers what is queued,
//! sends the end-of-stream message (NNG) and returns the counts.

pub mod eos;
pub mod file_sink;
pub mod heap;
pub mod nng_sink;
pub mod nng_socket;
pub mod pull;
pub mod spill;
pub mod url;
pub mod zmq_sink;
pub mod zmq_socket;

use thiserror::Error;

pub use eos::EndOfStream;
pub use file_sink::FileSink;
pub use nng_sink::{Distribute, NngSink, NngSinkConfig, Policy, Role};
pub use pull::{PullConfig, PullSummary, pull};
pub use spill::push_dir;
pub use url::check_url;
pub use zmq_sink::{Pattern, ZmqSink, ZmqSinkConfig};

/// Identity of one message (one batch image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageMeta {
    pub run: u32,
    pub writer_rank: u32,
    /// Sequence number of the batch within the writer's stream.
    pub seq: u64,
    /// Events in the batch.
    pub events: u64,
}

/// What a sink did with the messages it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SinkStats {
    /// Messages delivered (handed to a consumer connection or written as a file).
    pub batches: u64,
    pub events: u64,
    pub bytes: u64,
    /// Messages written to the spill directory instead (policy `spill`).
    pub spilled: u64,
    pub spilled_events: u64,
    /// Messages dropped (policy `drop`).
    pub dropped: u64,
    pub dropped_events: u64,
    /// Copies sent again after a consumer disconnected (not counted in `batches`).
    pub resent: u64,
    /// Malformed requests answered with an error (ZeroMQ REP).
    #[serde(default)]
    pub rejected: u64,
    /// Messages in flight when a consumer left whose resent copy no consumer took: the departed
    /// consumer may or may not hold them (a copy is in the spill directory under `spill`).
    #[serde(default)]
    pub in_doubt: u64,
    #[serde(default)]
    pub in_doubt_events: u64,
    /// Messages no consumer can take: larger than `max_message_bytes`, or in flight each time
    /// a connection closed (spilled under `spill`).
    #[serde(default)]
    pub refused: u64,
    #[serde(default)]
    pub refused_events: u64,
    /// URLs the end-of-stream message could not be delivered to.
    #[serde(default)]
    pub eos_undelivered: u64,
}

/// A destination for batch images.
pub trait Sink {
    /// Delivers one batch image (or applies the sink's policy when nobody takes it).
    fn send(&mut self, bytes: Vec<u8>, meta: &MessageMeta) -> Result<(), TransportError>;
    /// Sends a message that opens a stream (a series start), not counted as data.
    fn send_control(&mut self, _bytes: &[u8]) -> Result<(), TransportError> {
        Err(TransportError::Config(
            "this sink takes only HDF5 batch images (format: hdf5)".into(),
        ))
    }
    /// Flushes, sends the end-of-stream message where the sink has one, and reports counts.
    fn finish(&mut self) -> Result<SinkStats, TransportError>;
    /// The counts so far.
    fn stats(&self) -> SinkStats;
    /// Consumers connected now, where the transport knows it.
    fn consumers(&mut self) -> Option<usize> {
        None
    }
}

/// Transport errors.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("NNG {what} {url}")]
    Nng {
        what: &'static str,
        url: String,
        source: nng_socket::NngError,
    },
    #[error("{}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Zmq(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("sink already finished")]
    Finished,
    #[error("{0}")]
    Incomplete(String),
    /// No consumer took a message within the block timeout.
    #[error("{0}")]
    Stalled(String),
    /// A message no consumer can take under policy `block`.
    #[error("{0}")]
    Refused(String),
}

impl TransportError {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        TransportError::Io {
            path: path.into(),
            source,
        }
    }
}
