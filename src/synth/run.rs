//! The run as the DAQ writes it: one stream per group of present segments (ePix10k2M quads,
//! Jungfrau modules), the transition sequence with identical timestamps in every stream, chunk
//! rotation at Enables, small data alongside.

use super::SynthError;
use super::beamline::{self, BeamlineEvent, ExtraStream, Extras};
use super::detector_spec::SynthDetector;
use crate::detector::model::Family;
use crate::xtc::smalldata::{
    chunkinfo_names_id, chunkinfo_schema, runinfo_names_id, runinfo_schema,
};
use crate::xtc::stream_writer::StreamWriter;
use crate::xtc::{DgramBuilder, NamesId, TransitionId, VarData};
use std::path::{Path, PathBuf};

/// Seconds between the Unix and EPICS (1990-01-01) epochs.
pub const EPICS_EPOCH_OFFSET: u64 = 631_152_000;
/// Unix time of the first run's Configure (2026-01-01T00:00:00Z); run N starts N hours later.
pub const FIRST_RUN_UNIX: u64 = 1_767_225_600;
/// Events between Disable/Enable pairs.
pub const EVENTS_PER_ENABLE: u64 = 100;
/// Events between SlowUpdates (about one second at 120 Hz).
pub const EVENTS_PER_SLOW_UPDATE: u64 = 120;
/// Ticks between a Disable and the next Enable.
pub const PAUSE_TICKS: u64 = 12;
/// Jungfrau `hotPixelThresh` written in every event.
pub const JUNGFRAU_HOT_PIXEL_THRESH: u16 = 16000;
/// Jungfrau `maxHotPixels` written in every event.
pub const JUNGFRAU_MAX_HOT_PIXELS: u32 = 1000;

/// 120 Hz timing: tick k of a run as an XTC2 timestamp (`sec << 32 | nsec`, EPICS epoch).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    sec0: u64,
    pub tick: u64,
}

impl Clock {
    /// The clock of run `run`.
    pub fn for_run(run: u32) -> Clock {
        Clock {
            sec0: FIRST_RUN_UNIX + 3600 * u64::from(run) - EPICS_EPOCH_OFFSET,
            tick: 0,
        }
    }

    /// The timestamp of the current tick.
    pub fn timestamp(&self) -> u64 {
        let sec = self.sec0 + self.tick / 120;
        let nsec = (self.tick % 120) * 1_000_000_000 / 120;
        (sec << 32) | nsec
    }

    /// Unix seconds of the current tick.
    pub fn unix_secs(&self) -> u64 {
        self.sec0 + self.tick / 120 + EPICS_EPOCH_OFFSET
    }

    /// The timestamp of the current tick, then advances one tick.
    pub fn take(&mut self) -> u64 {
        let t = self.timestamp();
        self.tick += 1;
        t
    }
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS` (UTC).
pub fn utc_iso8601(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 over 400-year eras of 146097 days (March-based
    // years, so that the leap day ends a year).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Slab positions of stream `s` of `nstreams` for `nsegs` present segments (contiguous, even).
pub fn stream_segments(nsegs: usize, nstreams: usize, s: usize) -> std::ops::Range<usize> {
    s * nsegs / nstreams..(s + 1) * nsegs / nstreams
}

/// What a stream carries.
#[derive(Debug, Clone)]
enum Role {
    /// These slab positions of the detector.
    Detector(std::ops::Range<usize>),
    /// A beamline source.
    Beamline(ExtraStream),
}

struct StreamOut {
    w: StreamWriter,
    node: u32,
    role: Role,
}

/// The beamline sources of a run and what their values derive from.
#[derive(Debug, Clone, Copy)]
pub struct BeamlineSetup {
    pub extras: Extras,
    pub seed: u64,
    /// Nominal photon energy, eV.
    pub nominal_ev: f64,
}

/// Writes all streams of one run.
pub struct RunWriter {
    det: SynthDetector,
    exp: String,
    run: u32,
    chunk_bytes: u64,
    streams: Vec<StreamOut>,
    beamline: Option<BeamlineSetup>,
    /// Datagrams written per detector stream (they all get the same sequence).
    pub dgrams: u64,
    /// SlowUpdates written so far.
    pub slow_updates: u64,
}

fn raw_id(node: u32, k: usize) -> NamesId {
    NamesId::new(node, k as u8)
}

fn config_id(node: u32, k: usize) -> NamesId {
    NamesId::new(node, 64 + k as u8)
}

impl RunWriter {
    /// Opens `nstreams` detector streams in `xtc_dir`, then one per beamline stream.
    pub fn create(
        xtc_dir: &Path,
        exp: &str,
        run: u32,
        det: &SynthDetector,
        nstreams: usize,
        chunk_bytes: u64,
        beamline: Option<BeamlineSetup>,
    ) -> Result<RunWriter, SynthError> {
        let mut roles: Vec<Role> = (0..nstreams)
            .map(|s| Role::Detector(stream_segments(det.nsegs(), nstreams, s)))
            .collect();
        if let Some(b) = &beamline {
            roles.extend(b.extras.streams().into_iter().map(Role::Beamline));
        }
        let mut streams = Vec::with_capacity(roles.len());
        for (s, role) in roles.into_iter().enumerate() {
            streams.push(StreamOut {
                w: StreamWriter::create(xtc_dir, exp, run, s as u32, true)?,
                node: s as u32,
                role,
            });
        }
        Ok(RunWriter {
            det: det.clone(),
            exp: exp.to_string(),
            run,
            chunk_bytes,
            streams,
            beamline,
            dgrams: 0,
            slow_updates: 0,
        })
    }

    /// Writes one transition to every stream (Configure and BeginRun with their content; an
    /// Enable rotates a stream's chunk when the chunk has grown past the limit).
    pub fn transition(&mut self, ts: u64, id: TransitionId) -> Result<(), SynthError> {
        for st in &mut self.streams {
            let mut b = DgramBuilder::new(ts, id, 1, st.node);
            match (id, &st.role) {
                (TransitionId::Configure, Role::Detector(segs)) => {
                    configure(&mut b, &self.det, st.node, segs.clone())?
                }
                (TransitionId::Configure, Role::Beamline(kind)) => {
                    b.add_names(runinfo_names_id(st.node), &runinfo_schema(0))?;
                    b.add_names(chunkinfo_names_id(st.node), &chunkinfo_schema(0))?;
                    let extras = self.beamline.map(|b| b.extras).unwrap_or_default();
                    beamline::configure(&mut b, *kind, extras, st.node)?;
                }
                (TransitionId::SlowUpdate, Role::Beamline(ExtraStream::Epics)) => {
                    let nominal = self.beamline.map_or(0.0, |b| b.nominal_ev);
                    let values = beamline::epics_values(self.slow_updates, nominal);
                    beamline::slow_update(&mut b, st.node, &values)?;
                }
                (TransitionId::BeginRun, _) => {
                    b.add_data(
                        runinfo_names_id(st.node),
                        &runinfo_schema(0),
                        &[VarData::string(&self.exp), VarData::scalar(self.run)],
                    )?;
                }
                _ => {}
            }
            if id == TransitionId::Enable && st.w.chunk_bytes() > self.chunk_bytes {
                st.w.write_enable_and_switch_chunk(b)?;
            } else {
                st.w.write(b.bytes())?;
            }
        }
        self.dgrams += 1;
        self.slow_updates += u64::from(id == TransitionId::SlowUpdate);
        Ok(())
    }

    /// Writes one L1Accept: `raw` is the whole frame in slab order; `tick` feeds the Jungfrau
    /// hardware counters; `extra` is what the beamline streams record (those that record it).
    pub fn event(
        &mut self,
        ts: u64,
        event: u64,
        tick: u64,
        raw: &[u16],
        extra: Option<&BeamlineEvent>,
    ) -> Result<(), SynthError> {
        let det = &self.det;
        let len = det.seg_len();
        let (rows, cols) = (det.rows() as u32, det.cols() as u32);
        for st in &mut self.streams {
            let segs = match &st.role {
                Role::Detector(segs) => segs.clone(),
                Role::Beamline(kind) => {
                    let (Some(setup), Some(extra)) = (&self.beamline, extra) else {
                        return Err(SynthError::Invalid(
                            "a beamline stream needs its event record".into(),
                        ));
                    };
                    if let Some(b) = extra.dgram(*kind, setup.extras, ts, st.node)? {
                        st.w.write(b.bytes())?;
                    }
                    continue;
                }
            };
            let mut b = DgramBuilder::new(ts, TransitionId::L1Accept, 1, st.node);
            for (k, slab) in segs.enumerate() {
                let px = &raw[slab * len..(slab + 1) * len];
                let schema = det.raw_schema(det.segment_id(slab) as u32);
                match det.family() {
                    Family::Jungfrau => {
                        let hot = px
                            .iter()
                            .filter(|&&v| v & 0x3FFF >= JUNGFRAU_HOT_PIXEL_THRESH)
                            .count() as u32;
                        b.add_data(
                            raw_id(st.node, k),
                            &schema,
                            &[
                                VarData::array(&[1, rows, cols], px),
                                VarData::scalar(event + 1),
                                VarData::scalar(tick * 10_000_000 / 120),
                                VarData::scalar(JUNGFRAU_HOT_PIXEL_THRESH),
                                VarData::scalar(hot),
                                VarData::scalar(JUNGFRAU_MAX_HOT_PIXELS),
                            ],
                        )?;
                    }
                    _ => {
                        b.add_data(
                            raw_id(st.node, k),
                            &schema,
                            &[VarData::array(&[rows, cols], px)],
                        )?;
                    }
                }
            }
            st.w.write(b.bytes())?;
        }
        self.dgrams += 1;
        Ok(())
    }

    /// Chunks per stream so far (1 + rotations).
    pub fn chunks(&self) -> Vec<u32> {
        self.streams.iter().map(|s| s.w.chunk() + 1).collect()
    }

    /// Closes and renames every file; returns the paths.
    pub fn finish(self) -> Result<Vec<PathBuf>, SynthError> {
        let mut out = Vec::new();
        for st in self.streams {
            out.extend(st.w.finish()?);
        }
        Ok(out)
    }
}

fn configure(
    b: &mut DgramBuilder,
    det: &SynthDetector,
    node: u32,
    slabs: std::ops::Range<usize>,
) -> Result<(), SynthError> {
    b.add_names(runinfo_names_id(node), &runinfo_schema(0))?;
    b.add_names(chunkinfo_names_id(node), &chunkinfo_schema(0))?;
    for (k, slab) in slabs.clone().enumerate() {
        b.add_names(
            raw_id(node, k),
            &det.raw_schema(det.segment_id(slab) as u32),
        )?;
    }
    for (k, slab) in slabs.enumerate() {
        if let Some(cs) = det.config_schema(det.segment_id(slab) as u32) {
            let cfg = det.epix_panel_config();
            b.add_names(config_id(node, k), &cs)?;
            b.add_data(
                config_id(node, k),
                &cs,
                &[
                    VarData::array(&[4, 176, 192], &cfg.asic_pixel_config),
                    VarData::array(&[4], &cfg.trbit),
                ],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_iso8601(0), "1970-01-01T00:00:00");
        assert_eq!(utc_iso8601(FIRST_RUN_UNIX), "2026-01-01T00:00:00");
        assert_eq!(utc_iso8601(951_782_400 + 3723), "2000-02-29T01:02:03");
        assert_eq!(utc_iso8601(4_102_444_799), "2099-12-31T23:59:59");
    }
}
