//! Files written under a temporary name and renamed into place only when complete, so a reader
//! never sees a partial output. A temporary is removed when its writer is dropped unfinished,
//! and [`remove_temporaries`] removes every one still open (a process stopped by a signal).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

static OPEN: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn open_set() -> MutexGuard<'static, Option<HashSet<PathBuf>>> {
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes the temporary files of every unfinished [`AtomicFile`] of this process; returns how
/// many were removed. Their writers then fail at commit.
pub fn remove_temporaries() -> usize {
    let paths: Vec<PathBuf> = open_set().take().unwrap_or_default().into_iter().collect();
    paths
        .iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count()
}

/// A buffered file that becomes visible under its final name at [`AtomicFile::commit`].
pub struct AtomicFile {
    out: Option<BufWriter<File>>,
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
        open_set()
            .get_or_insert_with(HashSet::new)
            .insert(tmp.clone());
        Ok(AtomicFile {
            out: Some(BufWriter::with_capacity(1 << 20, f)),
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
        self.writer().write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// The underlying writer, for formatted output.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.out.as_mut().expect("open until commit")
    }

    /// Flushes, syncs and renames to the final name; returns it.
    pub fn commit(mut self) -> std::io::Result<PathBuf> {
        let out = self.out.take().expect("open until commit");
        let written = out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_data());
        let registered = open_set().as_mut().is_some_and(|s| s.remove(&self.tmp));
        if !registered {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                format!(
                    "{}: removed before completion (stop requested)",
                    self.tmp.display()
                ),
            ));
        }
        if let Err(e) = written.and_then(|()| std::fs::rename(&self.tmp, &self.path)) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(e);
        }
        Ok(self.path.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let mut open = open_set();
            if open.as_mut().is_some_and(|s| s.remove(&self.tmp)) {
                let _ = std::fs::remove_file(&self.tmp);
            }
        }
    }
}

/// Writes `bytes` to `path` atomically (through `path.tmp`).
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = AtomicFile::create(path, ".tmp")?;
    f.write_all(bytes)?;
    f.commit().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_files_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.h5");
        let mut f = AtomicFile::create(&a, ".tmp").unwrap();
        f.write_all(b"partial").unwrap();
        assert!(f.tmp_path().exists());
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        write(&a, b"whole").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"whole");

        // A final name that cannot be taken: the error, and no temporary left.
        let b = dir.path().join("b.h5");
        std::fs::create_dir(&b).unwrap();
        assert!(write(&b, b"whole").is_err());
        assert!(!dir.path().join("b.h5.tmp").exists());
    }
}
