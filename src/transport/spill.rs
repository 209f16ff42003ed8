//! Resending spilled batches (`lclstreamer push DIR URL`).

use std::path::Path;

use super::nng_sink::{NngSink, NngSinkConfig};
use super::{MessageMeta, Sink, SinkStats, TransportError};
use crate::output::read::image_info;

/// Sends every `*.h5` batch file in `dir` (sorted by name) through an NNG sink configured by
/// `cfg` (policy forced to `block`), then the end-of-stream message naming `push <dir>`.
/// With `delete`, each file is removed once the whole stream, end-of-stream included, was delivered.
pub fn push_dir(
    dir: &Path,
    mut cfg: NngSinkConfig,
    delete: bool,
) -> Result<SinkStats, TransportError> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| TransportError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "h5") && p.is_file())
        .collect();
    files.sort();
    cfg.policy = super::Policy::Block;
    let mut sink = NngSink::new(cfg, 0)?;
    sink.set_sender(format!("push {}", dir.display()));
    for path in &files {
        let bytes = std::fs::read(path).map_err(|e| TransportError::io(path, e))?;
        let info = image_info(&bytes).map_err(|e| {
            TransportError::Incomplete(format!("{}: not a batch image: {e}", path.display()))
        })?;
        let meta = MessageMeta {
            run: info.run,
            writer_rank: info.writer_rank,
            seq: info.seq,
            events: info.n_events,
        };
        sink.send(bytes, &meta)?;
    }
    let stats = sink.finish()?;
    if delete {
        for path in &files {
            std::fs::remove_file(path).map_err(|e| TransportError::io(path, e))?;
        }
    }
    Ok(stats)
}
