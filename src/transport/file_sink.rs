//! Atomic `.h5` files: written under a temporary name in the target directory, then renamed.

use std::path::{Path, PathBuf};

use super::{MessageMeta, Sink, SinkStats, TransportError};

/// File name of a batch: `r<run>_w<writer rank>_s<seq>.h5`.
pub fn batch_file_name(meta: &MessageMeta) -> String {
    format!(
        "r{:04}_w{:03}_s{:06}.h5",
        meta.run, meta.writer_rank, meta.seq
    )
}

/// Writes `bytes` to `dir/name` atomically (temporary file in `dir`, fsync, rename).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, TransportError> {
    let path = dir.join(name);
    crate::atomic_file::write(&path, bytes).map_err(|e| TransportError::io(&path, e))?;
    Ok(path)
}

/// Writes every batch as its own `.h5` file under `dir`.
pub struct FileSink {
    dir: PathBuf,
    stats: SinkStats,
}

impl FileSink {
    /// Creates `dir` (and parents) if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, TransportError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| TransportError::io(&dir, e))?;
        Ok(FileSink {
            dir,
            stats: SinkStats::default(),
        })
    }
}

impl Sink for FileSink {
    fn send(&mut self, bytes: Vec<u8>, meta: &MessageMeta) -> Result<(), TransportError> {
        write_atomic(&self.dir, &batch_file_name(meta), &bytes)?;
        self.stats.batches += 1;
        self.stats.events += meta.events;
        self.stats.bytes += bytes.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkStats, TransportError> {
        Ok(self.stats)
    }

    fn stats(&self) -> SinkStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_and_complete_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileSink::new(dir.path().join("out")).unwrap();
        let meta = MessageMeta {
            run: 7,
            writer_rank: 2,
            seq: 5,
            events: 4,
        };
        s.send(vec![1, 2, 3], &meta).unwrap();
        let stats = s.finish().unwrap();
        assert_eq!((stats.batches, stats.events, stats.bytes), (1, 4, 3));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("r0007_w002_s000005.h5")]
        );
        assert_eq!(
            std::fs::read(dir.path().join("out/r0007_w002_s000005.h5")).unwrap(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn unwritable_directory_names_the_path() {
        let err = write_atomic(Path::new("/nonexistent/dir"), "x.h5", b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir/x.h5"), "{err}");
    }
}
