//! Writing one stream of a run as the DAQ does: bigdata chunks `-cNNN.xtc2` (a new chunk starts
//! after an Enable that carries chunkinfo) and the matching small-data file. Files are written
//! under `.inprogress` names and renamed when complete.

use super::dgram::Dgram;
use super::error::{FormatError, XtcError};
use super::header::{NamesId, TransitionId};
use super::index::Location;
use super::names::NamesLookup;
use super::run::{FileName, IN_PROGRESS};
use super::smalldata::{SMDINFO_NAMES_ID, chunkinfo_schema, smd_dgram_for};
use super::writer::{DgramBuilder, VarData};
use crate::atomic_file::AtomicFile;
use std::path::{Path, PathBuf};

struct OutFile(AtomicFile);

impl OutFile {
    fn create(path: PathBuf) -> Result<Self, XtcError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| XtcError::io(dir, 0, e))?;
        }
        AtomicFile::create(&path, IN_PROGRESS)
            .map(OutFile)
            .map_err(|e| XtcError::io(&path, 0, e))
    }

    fn tmp(&self) -> &Path {
        self.0.tmp_path()
    }

    fn pos(&self) -> u64 {
        self.0.position()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<u64, XtcError> {
        let at = self.0.position();
        self.0
            .write_all(bytes)
            .map_err(|e| XtcError::io(self.0.tmp_path(), at, e))?;
        Ok(at)
    }

    fn close(self) -> Result<PathBuf, XtcError> {
        let (tmp, pos) = (self.0.tmp_path().to_path_buf(), self.0.position());
        self.0.commit().map_err(|e| XtcError::io(&tmp, pos, e))
    }
}

/// Writes the bigdata chunks and small data of one stream.
pub struct StreamWriter {
    dir: PathBuf,
    exp: String,
    run: u32,
    stream: u32,
    chunk: u32,
    big: OutFile,
    smd: Option<OutFile>,
    lookup: NamesLookup,
    done: Vec<PathBuf>,
}

impl StreamWriter {
    /// Starts stream `stream` of `exp` run `run` in the `xtc` directory `dir` (small data in
    /// `dir/smalldata` when `with_smd`).
    pub fn create(
        dir: &Path,
        exp: &str,
        run: u32,
        stream: u32,
        with_smd: bool,
    ) -> Result<Self, XtcError> {
        let big = OutFile::create(dir.join(FileName::bigdata_name(exp, run, stream, 0)))?;
        let smd = if with_smd {
            Some(OutFile::create(
                dir.join("smalldata")
                    .join(FileName::smd_name(exp, run, stream)),
            )?)
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            exp: exp.to_string(),
            run,
            stream,
            chunk: 0,
            big,
            smd,
            lookup: NamesLookup::new(),
            done: Vec::new(),
        })
    }

    /// Bytes written to the current chunk.
    pub fn chunk_bytes(&self) -> u64 {
        self.big.pos()
    }

    /// The current chunk id.
    pub fn chunk(&self) -> u32 {
        self.chunk
    }

    /// Appends one complete datagram; returns where it went.
    pub fn write(&mut self, dgram: &[u8]) -> Result<Location, XtcError> {
        let offset = self.big.pos();
        let d = Dgram::parse(dgram, offset).map_err(|e| XtcError::format(self.big.tmp(), e))?;
        if d.service() == TransitionId::Configure {
            self.lookup = NamesLookup::from_configure(&d.root())
                .map_err(|e| XtcError::format(self.big.tmp(), e))?;
        }
        self.big.write(dgram)?;
        if let Some(smd) = &mut self.smd {
            let s = smd_dgram_for(&d, offset, SMDINFO_NAMES_ID)
                .map_err(|e| XtcError::format(smd.tmp(), e))?;
            smd.write(&s)?;
        }
        Ok(Location {
            chunk: self.chunk,
            offset,
            size: dgram.len() as u64,
        })
    }

    /// Completes `enable` with a chunkinfo block naming the next chunk, writes it to the current
    /// chunk, closes that chunk and opens the next. The Configure must declare `chunkinfo`.
    pub fn write_enable_and_switch_chunk(
        &mut self,
        mut enable: DgramBuilder,
    ) -> Result<(), XtcError> {
        let id: NamesId = self.lookup.find("chunkinfo", "chunkinfo").ok_or_else(|| {
            XtcError::format(
                self.big.tmp(),
                FormatError::new(
                    self.big.pos(),
                    "cannot start a new chunk: the Configure declares no chunkinfo",
                ),
            )
        })?;
        let next = self.chunk + 1;
        let name = FileName::bigdata_name(&self.exp, self.run, self.stream, next);
        let schema = self
            .lookup
            .get(id)
            .map_or_else(|| chunkinfo_schema(0), |s| s.as_ref().clone());
        enable
            .add_data(
                id,
                &schema,
                &[VarData::scalar(next), VarData::string(&name)],
            )
            .map_err(|e| XtcError::format(self.big.tmp(), e))?;
        let bytes = enable.finish();
        self.write(&bytes)?;
        let new = OutFile::create(self.dir.join(&name))?;
        let old = std::mem::replace(&mut self.big, new);
        self.done.push(old.close()?);
        self.chunk = next;
        Ok(())
    }

    /// Flushes and renames every file; returns the paths written.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, XtcError> {
        self.done.push(self.big.close()?);
        if let Some(smd) = self.smd {
            self.done.push(smd.close()?);
        }
        Ok(self.done)
    }
}
