//! Files written under a temporary name and renamed into place only when complete, so a reader
//! never sees a partial output.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A buffered file that becomes visible under its final name at [`AtomicFile::commit`].
pub struct AtomicFile {
    out: BufWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    pos: u64,
}

impl AtomicFile {
    /// Creates `path` + `suffix` (e.g. `.tmp`, `.inprogress`) in an existing directory.
    pub fn create(path: &Path, suffix: &str) -> std::io::Result<AtomicFile> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(suffix);
        let tmp = PathBuf::from(tmp);
        let f = File::create(&tmp)?;
        Ok(AtomicFile {
            out: BufWriter::with_capacity(1 << 20, f),
            tmp,
            path: path.to_path_buf(),
            pos: 0,
        })
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary name being written.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Bytes written so far with [`AtomicFile::write_all`].
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Appends `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// The underlying writer, for formatted output.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        &mut self.out
    }

    /// Flushes, syncs and renames to the final name; returns it.
    pub fn commit(self) -> std::io::Result<PathBuf> {
        let f = self.out.into_inner().map_err(|e| e.into_error())?;
        f.sync_data()?;
        std::fs::rename(&self.tmp, &self.path)?;
        Ok(self.path)
    }
}

/// Writes `bytes` to `path` atomically (through `path.tmp`).
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = AtomicFile::create(path, ".tmp")?;
    f.write_all(bytes)?;
    f.commit().map(|_| ())
}
