//! End-of-stream message: the bytes `LCLSTREAMER-EOS\n` followed by one JSON object.
//!
//! ```text
//! LCLSTREAMER-EOS
//! {"sender":"writer 3","writer_rank":3,"run":12,"url":"tcp://...","batches":10,"events":320,
//!  "bytes":123456,"spilled":0,"spilled_events":0,"dropped":0,"dropped_events":0,"resent":0}
//! ```
//! `batches`/`events`/`bytes` count the distinct data messages this sender delivered to this URL
//! before the end-of-stream; `spilled`/`dropped`/`resent` are the sender's totals (`resent`:
//! copies sent again after a consumer disconnected; consumers drop them by writer rank and seq). Data messages are HDF5 file
//! images (they start with `\x89HDF`), so the two never collide.

use serde::{Deserialize, Serialize};

/// Magic prefix of an end-of-stream message.
pub const MAGIC: &[u8] = b"LCLSTREAMER-EOS\n";

/// Counts a sender announces when it stops sending to one URL.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EndOfStream {
    /// Human-readable sender identity (`writer 3`, `push DIR`).
    pub sender: String,
    pub writer_rank: Option<u32>,
    pub run: Option<u32>,
    pub url: String,
    pub batches: u64,
    pub events: u64,
    pub bytes: u64,
    pub spilled: u64,
    pub spilled_events: u64,
    pub dropped: u64,
    pub dropped_events: u64,
    /// Copies resent after a consumer disconnected (duplicates a consumer may already hold).
    #[serde(default)]
    pub resent: u64,
    /// Malformed requests answered with an error (ZeroMQ REP sinks).
    #[serde(default)]
    pub rejected: u64,
    /// Sent before a consumer left and not taken when resent: the departed consumer may hold them.
    #[serde(default)]
    pub in_doubt: u64,
    /// Refused: no consumer could take them (see `SinkStats::refused`).
    #[serde(default)]
    pub refused: u64,
}

impl EndOfStream {
    /// The message bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&serde_json::to_vec(self).expect("plain struct serialises"));
        v
    }

    /// `None` when `msg` is not an end-of-stream message; an error when it is one but malformed.
    pub fn parse(msg: &[u8]) -> Option<Result<Self, String>> {
        let body = msg.strip_prefix(MAGIC)?;
        Some(
            serde_json::from_slice(body)
                .map_err(|e| format!("malformed end-of-stream message: {e}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detection() {
        let e = EndOfStream {
            sender: "writer 1".into(),
            writer_rank: Some(1),
            batches: 3,
            events: 96,
            ..Default::default()
        };
        let m = e.encode();
        assert_eq!(EndOfStream::parse(&m).unwrap().unwrap(), e);
        assert!(EndOfStream::parse(b"\x89HDF\r\n\x1a\n....").is_none());
        assert!(
            EndOfStream::parse(b"LCLSTREAMER-EOS\n{not json")
                .unwrap()
                .is_err()
        );
    }
}
