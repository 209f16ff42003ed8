//! Beamline sources beside the imaging detector, each in its own stream as the DAQ records them:
//! BLD (`ebeam` with a per-shot photon energy, `gmd` pulse energy; lcls2 `BldNames.cc` names and
//! algorithms), EPICS PVs archived in SlowUpdates only (`epics` + `epicsinfo`, as lcls2's
//! `EpicsArchMonitor` writes them), and an hsd-like digitizer: per-channel waveforms plus a
//! feature-extracted peak list, present on some events only.
//!
//! Every value is a pure function of (seed, event) or (seed, SlowUpdate index), so tests can
//! recompute what synth wrote.

use super::SynthError;
use super::random::substream;
use crate::xtc::{Alg, ChildOrder, DataType, DgramBuilder, NamesId, Schema, VarData, VarDesc};
use serde::Serialize;

/// Which beamline sources a run carries (each in its own stream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Extras {
    /// BLD `ebeam` (`ebeamPhotonEnergy` varies per shot).
    pub ebeam: bool,
    /// BLD `gmd` (`energy`, mJ per pulse).
    pub gmd: bool,
    /// EPICS PVs in SlowUpdates ([`EPICS_PVS`]).
    pub epics: bool,
    /// The hsd-like digitizer on a fraction [`HSD_RATE`] of the events.
    pub hsd: bool,
}

/// The streams the extra sources go to, in stream order after the detector's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtraStream {
    /// `ebeam` and/or `gmd`, every event.
    Bld,
    /// `epics`/`epicsinfo`: transitions only, PV values in SlowUpdates.
    Epics,
    /// `hsd`: L1Accepts on some events only.
    Hsd,
}

impl Extras {
    /// Every source: the `beamline` preset.
    pub const ALL: Extras = Extras {
        ebeam: true,
        gmd: true,
        epics: true,
        hsd: true,
    };

    /// Parses `ebeam,gmd,epics,hsd` (any subset), `beamline` (all) or `none`.
    pub fn parse(list: &str) -> Result<Extras, String> {
        let mut e = Extras::default();
        for w in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "ebeam" => e.ebeam = true,
                "gmd" => e.gmd = true,
                "epics" => e.epics = true,
                "hsd" => e.hsd = true,
                "beamline" | "all" => e = Extras::ALL,
                "none" => {}
                _ => {
                    return Err(format!(
                        "--extras: unknown source {w:?} (ebeam, gmd, epics, hsd, beamline, none)"
                    ));
                }
            }
        }
        Ok(e)
    }

    /// The extra streams, in order.
    pub fn streams(&self) -> Vec<ExtraStream> {
        let mut v = Vec::new();
        if self.ebeam || self.gmd {
            v.push(ExtraStream::Bld);
        }
        if self.epics {
            v.push(ExtraStream::Epics);
        }
        if self.hsd {
            v.push(ExtraStream::Hsd);
        }
        v
    }
}

/// Substream tags (far above the per-event noise tags `4 + event`).
const TAG_BLD: u64 = 1 << 48;
const TAG_HSD: u64 = (1 << 48) + 1;

/// NamesIds within a beamline stream's node.
fn id(node: u32, k: u8) -> NamesId {
    NamesId::new(node, k)
}
const ID_EBEAM: u8 = 0;
const ID_GMD: u8 = 1;
const ID_EPICS: u8 = 0;
const ID_EPICSINFO: u8 = 1;
const ID_HSD_RAW: u8 = 0;
const ID_HSD_FEX: u8 = 1;

/// `ebeam` variables (lcls2 `BldNames::EBeamDataV7`), all DOUBLE but `damageMask` UINT32.
pub const EBEAM_VARS: [&str; 21] = [
    "damageMask",
    "ebeamCharge",
    "ebeamL3Energy",
    "ebeamLTUPosX",
    "ebeamLTUPosY",
    "ebeamLUTAngX",
    "ebeamLTUAngY",
    "ebeamPkCurrBC2",
    "ebeamEnergyBC2",
    "ebeamPkCurrBC1",
    "ebeamEnergyBC1",
    "ebeamUndPosX",
    "ebeamUndPosY",
    "ebeamUndAngX",
    "ebeamUndAngY",
    "ebeamXTCAVAmpl",
    "ebeamXTCAVPhase",
    "ebeamDumpCharge",
    "ebeamPhotonEnergy",
    "ebeamLTU250",
    "ebeamLTU450",
];

/// `ebeam` / `ebeam` / raw 2.0.0.
pub fn ebeam_schema() -> Schema {
    let vars = EBEAM_VARS
        .iter()
        .map(|&n| {
            let t = if n == "damageMask" {
                DataType::UINT32
            } else {
                DataType::DOUBLE
            };
            VarDesc::new(n, t, 0)
        })
        .collect();
    bld_schema("ebeam", Alg::new("raw", 2, 0, 0), vars)
}

/// `gmd` / `gmd` / raw 2.1.0 (lcls2 `BldNames::GmdV1`; `energy` in mJ).
pub fn gmd_schema() -> Schema {
    let vars = vec![
        VarDesc::new("energy", DataType::DOUBLE, 0),
        VarDesc::new("xpos", DataType::DOUBLE, 0),
        VarDesc::new("ypos", DataType::DOUBLE, 0),
        VarDesc::new("avgIntensity", DataType::DOUBLE, 0),
        VarDesc::new("rmsElectronSum", DataType::INT64, 0),
        VarDesc::new("electron1BkgNoiseAvg", DataType::INT16, 0),
        VarDesc::new("electron2BkgNoiseAvg", DataType::INT16, 0),
    ];
    bld_schema("gmd", Alg::new("raw", 2, 1, 0), vars)
}

fn bld_schema(name: &str, alg: Alg, vars: Vec<VarDesc>) -> Schema {
    Schema {
        det_type: name.into(),
        det_name: name.into(),
        det_id: name.into(),
        alg,
        segment: 0,
        vars,
    }
}

/// The BLD values of one shot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BldEvent {
    /// `ebeam.ebeamPhotonEnergy`, eV: nominal × (1 + 0.002·N(0,1)).
    #[serde(rename = "ebeamPhotonEnergy")]
    pub photon_energy_ev: f64,
    /// `ebeam.ebeamCharge`, nC.
    #[serde(rename = "ebeamCharge")]
    pub charge_nc: f64,
    /// `ebeam.ebeamL3Energy`, MeV (∝ √photon energy).
    #[serde(rename = "ebeamL3Energy")]
    pub l3_energy_mev: f64,
    /// `gmd.energy`, mJ (log-normal around 2 mJ).
    #[serde(rename = "energy")]
    pub gmd_mj: f64,
    #[serde(rename = "xpos")]
    pub gmd_xpos: f64,
    #[serde(rename = "ypos")]
    pub gmd_ypos: f64,
}

impl BldEvent {
    /// The BLD of `event` for a beam of `nominal_ev`.
    pub fn new(seed: u64, event: u64, nominal_ev: f64) -> BldEvent {
        let mut rng = substream(seed, TAG_BLD, event);
        let photon_energy_ev = nominal_ev * (1.0 + 0.002 * rng.normal());
        BldEvent {
            photon_energy_ev,
            charge_nc: 0.25 + 0.005 * rng.normal(),
            l3_energy_mev: 13_640.0 * (photon_energy_ev / 9_500.0).sqrt(),
            gmd_mj: 2.0 * (0.15 * rng.normal()).exp(),
            gmd_xpos: 0.01 * rng.normal(),
            gmd_ypos: 0.01 * rng.normal(),
        }
    }

    fn ebeam_values(&self) -> Vec<VarData<'static>> {
        EBEAM_VARS
            .iter()
            .map(|&n| match n {
                "damageMask" => VarData::scalar(0u32),
                "ebeamCharge" => VarData::scalar(self.charge_nc),
                "ebeamL3Energy" => VarData::scalar(self.l3_energy_mev),
                "ebeamPhotonEnergy" => VarData::scalar(self.photon_energy_ev),
                "ebeamDumpCharge" => VarData::scalar(self.charge_nc * 6.241_509e9),
                _ => VarData::scalar(0f64),
            })
            .collect()
    }

    fn gmd_values(&self) -> Vec<VarData<'static>> {
        vec![
            VarData::scalar(self.gmd_mj),
            VarData::scalar(self.gmd_xpos),
            VarData::scalar(self.gmd_ypos),
            VarData::scalar(self.gmd_mj),
            VarData::scalar((self.gmd_mj * 1e4).round() as i64),
            VarData::scalar(12i16),
            VarData::scalar(15i16),
        ]
    }
}

/// One archived PV: its alias (the `epics` variable name) and PV name.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EpicsPv {
    pub alias: &'static str,
    pub pv: &'static str,
    #[serde(serialize_with = "ser_dtype")]
    pub dtype: DataType,
    /// SlowUpdates between value changes.
    pub period: u64,
}

fn ser_dtype<S: serde::Serializer>(t: &DataType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.name())
}

/// The archived PVs: a wavelength (nm), a detector stage position (mm) and a sample name.
pub const EPICS_PVS: [EpicsPv; 3] = [
    EpicsPv {
        alias: "wavelength",
        pv: "SIOC:SYS0:ML00:AO192",
        dtype: DataType::DOUBLE,
        period: 3,
    },
    EpicsPv {
        alias: "det_distance",
        pv: "MFX:DET:MMS:04.RBV",
        dtype: DataType::DOUBLE,
        period: 4,
    },
    EpicsPv {
        alias: "MFX:USR:SAMPLE:NAME",
        pv: "MFX:USR:SAMPLE:NAME",
        dtype: DataType::CHARSTR,
        period: 5,
    },
];

/// One PV value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PvValue {
    F64(f64),
    Str(String),
}

/// The PV values carried by SlowUpdate `u` (0-based) of a run with nominal beam `nominal_ev`:
/// each changes every `period` SlowUpdates.
pub fn epics_values(u: u64, nominal_ev: f64) -> Vec<PvValue> {
    EPICS_PVS
        .iter()
        .map(|p| {
            let k = u / p.period;
            match p.alias {
                "wavelength" => PvValue::F64(1_239.841_984 / (nominal_ev + 25.0 * k as f64)),
                "det_distance" => PvValue::F64(100.0 + 0.5 * k as f64),
                _ => PvValue::Str(format!("lysozyme-{k}")),
            }
        })
        .collect()
}

/// `epics` / `epics` / raw 2.0.0: `StaleFlags` UINT32 (1) then one variable per PV alias.
pub fn epics_schema() -> Schema {
    let mut vars = vec![VarDesc::new("StaleFlags", DataType::UINT32, 1)];
    vars.extend(
        EPICS_PVS
            .iter()
            .map(|p| VarDesc::new(p.alias, p.dtype, u32::from(p.dtype == DataType::CHARSTR))),
    );
    Schema {
        det_type: "epics".into(),
        det_name: "epics".into(),
        det_id: "synth-epics".into(),
        alg: Alg::new("raw", 2, 0, 0),
        segment: 0,
        vars,
    }
}

/// `epicsinfo` / `epicsinfo` / epicsinfo 1.0.0: `keys` = `"epicsname"`, one CHARSTR per alias
/// holding its PV name.
pub fn epicsinfo_schema() -> Schema {
    let mut vars = vec![VarDesc::new("keys", DataType::CHARSTR, 1)];
    vars.extend(
        EPICS_PVS
            .iter()
            .map(|p| VarDesc::new(p.alias, DataType::CHARSTR, 1)),
    );
    Schema {
        det_type: "epicsinfo".into(),
        det_name: "epicsinfo".into(),
        det_id: "detnum1234".into(),
        alg: Alg::new("epicsinfo", 1, 0, 0),
        segment: 0,
        vars,
    }
}

/// Digitizer channels.
pub const HSD_CHANNELS: usize = 4;
/// Samples per waveform.
pub const HSD_SAMPLES: usize = 1024;
/// Fraction of events the digitizer records.
pub const HSD_RATE: f64 = 0.7;
/// Waveform baseline (ADU).
pub const HSD_BASELINE: f64 = 1000.0;
/// Feature extraction keeps samples above this (ADU), with [`HSD_FEX_PAD`] samples either side.
pub const HSD_FEX_THRESHOLD: u16 = 1030;
/// Samples kept before and after each run of samples above threshold.
pub const HSD_FEX_PAD: usize = 4;

/// Channel variable name, `chan00` …
pub fn hsd_chan(c: usize) -> String {
    format!("chan{c:02}")
}

fn hsd_schema(alg: Alg, vars: Vec<VarDesc>) -> Schema {
    Schema {
        det_type: "hsd".into(),
        det_name: "hsd".into(),
        det_id: "synth-hsd-0".into(),
        alg,
        segment: 0,
        vars,
    }
}

/// `hsd` / raw 0.0.1: `chanNN` UINT16 (HSD_SAMPLES) waveforms.
pub fn hsd_raw_schema() -> Schema {
    hsd_schema(
        Alg::new("raw", 0, 0, 1),
        (0..HSD_CHANNELS)
            .map(|c| VarDesc::new(&hsd_chan(c), DataType::UINT16, 1))
            .collect(),
    )
}

/// `hsd` / fex 0.0.1, per channel: `chanNN_startpos` UINT32 (n), `chanNN_peaklen` UINT32 (n)
/// and `chanNN_peaks` UINT16 (Σ peaklen), the samples of every peak concatenated.
pub fn hsd_fex_schema() -> Schema {
    let mut vars = Vec::new();
    for c in 0..HSD_CHANNELS {
        let ch = hsd_chan(c);
        vars.push(VarDesc::new(&format!("{ch}_startpos"), DataType::UINT32, 1));
        vars.push(VarDesc::new(&format!("{ch}_peaklen"), DataType::UINT32, 1));
        vars.push(VarDesc::new(&format!("{ch}_peaks"), DataType::UINT16, 1));
    }
    hsd_schema(Alg::new("fex", 0, 0, 1), vars)
}

/// One channel of one digitizer event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HsdChannel {
    #[serde(skip)]
    pub waveform: Vec<u16>,
    /// Σ waveform (for the truth file, which does not list the samples).
    pub waveform_sum: u64,
    /// First sample of each peak.
    pub startpos: Vec<u32>,
    /// Samples of each peak.
    pub peaklen: Vec<u32>,
    /// The peaks' samples, concatenated: peak i is `waveform[startpos[i]..][..peaklen[i]]`.
    #[serde(skip)]
    pub peaks: Vec<u16>,
}

/// The digitizer's record of `event`, `None` when it did not record this event.
pub fn hsd_event(seed: u64, event: u64) -> Option<Vec<HsdChannel>> {
    let mut rng = substream(seed, TAG_HSD, event);
    if rng.uniform() >= HSD_RATE {
        return None;
    }
    Some(
        (0..HSD_CHANNELS)
            .map(|c| {
                let mut rng = substream(seed, TAG_HSD + 1 + c as u64, event);
                hsd_channel(&mut rng)
            })
            .collect(),
    )
}

fn hsd_channel(rng: &mut crate::algo::spots::SplitMix64) -> HsdChannel {
    let npulses = (rng.next_u64() % 5) as usize;
    let pulses: Vec<(f64, f64, f64)> = (0..npulses)
        .map(|_| {
            let t0 = 20.0 + rng.uniform() * (HSD_SAMPLES as f64 - 40.0);
            let amp = 50.0 + rng.uniform() * 1450.0;
            let sigma = 1.5 + rng.uniform() * 2.5;
            (t0, amp, sigma)
        })
        .collect();
    let waveform: Vec<u16> = (0..HSD_SAMPLES)
        .map(|i| {
            let mut v = HSD_BASELINE + 2.0 * rng.normal();
            for &(t0, amp, sigma) in &pulses {
                let d = (i as f64 - t0) / sigma;
                if d.abs() < 8.0 {
                    v += amp * (-0.5 * d * d).exp();
                }
            }
            v.round().clamp(0.0, 4095.0) as u16
        })
        .collect();
    let (startpos, peaklen) = fex_windows(&waveform);
    let peaks = startpos
        .iter()
        .zip(&peaklen)
        .flat_map(|(&s, &l)| waveform[s as usize..(s + l) as usize].iter().copied())
        .collect();
    HsdChannel {
        waveform_sum: waveform.iter().map(|&v| u64::from(v)).sum(),
        waveform,
        startpos,
        peaklen,
        peaks,
    }
}

/// Windows around runs of samples above [`HSD_FEX_THRESHOLD`], padded by [`HSD_FEX_PAD`] and
/// merged where they touch: `(start, length)` lists.
pub fn fex_windows(w: &[u16]) -> (Vec<u32>, Vec<u32>) {
    let mut wins: Vec<(usize, usize)> = Vec::new();
    for (i, &v) in w.iter().enumerate() {
        if v <= HSD_FEX_THRESHOLD {
            continue;
        }
        let (s, e) = (
            i.saturating_sub(HSD_FEX_PAD),
            (i + HSD_FEX_PAD + 1).min(w.len()),
        );
        match wins.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => wins.push((s, e)),
        }
    }
    wins.iter()
        .map(|&(s, e)| (s as u32, (e - s) as u32))
        .unzip()
}

/// Adds a beamline stream's Names (and `epicsinfo`'s values) to its Configure.
pub fn configure(
    b: &mut DgramBuilder,
    kind: ExtraStream,
    extras: Extras,
    node: u32,
) -> Result<(), SynthError> {
    match kind {
        ExtraStream::Bld => {
            if extras.ebeam {
                b.add_names(id(node, ID_EBEAM), &ebeam_schema())?;
            }
            if extras.gmd {
                b.add_names(id(node, ID_GMD), &gmd_schema())?;
            }
        }
        ExtraStream::Epics => {
            b.add_names(id(node, ID_EPICS), &epics_schema())?;
            let info = epicsinfo_schema();
            b.add_names(id(node, ID_EPICSINFO), &info)?;
            let mut values = vec![VarData::string("epicsname")];
            values.extend(EPICS_PVS.iter().map(|p| VarData::string(p.pv)));
            b.add_data(id(node, ID_EPICSINFO), &info, &values)?;
        }
        ExtraStream::Hsd => {
            b.add_names(id(node, ID_HSD_RAW), &hsd_raw_schema())?;
            b.add_names(id(node, ID_HSD_FEX), &hsd_fex_schema())?;
        }
    }
    Ok(())
}

/// Adds the PV values of one SlowUpdate to the epics stream's datagram (`[Data, Shapes]`, as
/// `DescribedData` writes).
pub fn slow_update(b: &mut DgramBuilder, node: u32, values: &[PvValue]) -> Result<(), SynthError> {
    let stale = [0u32];
    let mut data = vec![VarData::array(&[1], &stale[..])];
    data.extend(values.iter().map(|v| match v {
        PvValue::F64(x) => VarData::scalar(*x),
        PvValue::Str(s) => VarData::string(s),
    }));
    b.add_data_ordered(
        id(node, ID_EPICS),
        &epics_schema(),
        &data,
        ChildOrder::DataFirst,
    )?;
    Ok(())
}

/// Everything the beamline streams record for one L1Accept.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamlineEvent {
    pub bld: BldEvent,
    pub hsd: Option<Vec<HsdChannel>>,
}

impl BeamlineEvent {
    /// The record of `event`.
    pub fn new(seed: u64, event: u64, nominal_ev: f64, extras: Extras) -> BeamlineEvent {
        BeamlineEvent {
            bld: BldEvent::new(seed, event, nominal_ev),
            hsd: if extras.hsd {
                hsd_event(seed, event)
            } else {
                None
            },
        }
    }

    /// The L1Accept of stream `kind`, `None` when the stream does not record this event.
    pub fn dgram(
        &self,
        kind: ExtraStream,
        extras: Extras,
        ts: u64,
        node: u32,
    ) -> Result<Option<DgramBuilder>, SynthError> {
        let mut b = DgramBuilder::new(ts, crate::xtc::TransitionId::L1Accept, 1, node);
        match kind {
            ExtraStream::Bld => {
                if extras.ebeam {
                    let v = self.bld.ebeam_values();
                    b.add_data_ordered(
                        id(node, ID_EBEAM),
                        &ebeam_schema(),
                        &v,
                        ChildOrder::DataFirst,
                    )?;
                }
                if extras.gmd {
                    let v = self.bld.gmd_values();
                    b.add_data_ordered(id(node, ID_GMD), &gmd_schema(), &v, ChildOrder::DataFirst)?;
                }
            }
            ExtraStream::Epics => return Ok(None),
            ExtraStream::Hsd => {
                let Some(chans) = &self.hsd else {
                    return Ok(None);
                };
                let raw: Vec<VarData<'_>> = chans
                    .iter()
                    .map(|c| VarData::array(&[c.waveform.len() as u32], &c.waveform[..]))
                    .collect();
                b.add_data(id(node, ID_HSD_RAW), &hsd_raw_schema(), &raw)?;
                let mut fex = Vec::new();
                for c in chans {
                    fex.push(VarData::array(&[c.startpos.len() as u32], &c.startpos[..]));
                    fex.push(VarData::array(&[c.peaklen.len() as u32], &c.peaklen[..]));
                    fex.push(VarData::array(&[c.peaks.len() as u32], &c.peaks[..]));
                }
                b.add_data(id(node, ID_HSD_FEX), &hsd_fex_schema(), &fex)?;
            }
        }
        Ok(Some(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fex_windows_pad_merge_and_clip() {
        let mut w = vec![1000u16; 40];
        w[1] = 2000;
        w[12] = 1500;
        w[14] = 1500;
        w[39] = 1100;
        let (s, l) = fex_windows(&w);
        assert_eq!(s, vec![0, 8, 35]);
        assert_eq!(l, vec![6, 11, 5]);
        assert_eq!(fex_windows(&[1000; 8]), (vec![], vec![]));
    }

    #[test]
    fn extras_parse() {
        assert_eq!(Extras::parse("beamline").unwrap(), Extras::ALL);
        let e = Extras::parse("gmd,hsd").unwrap();
        assert!(e.gmd && e.hsd && !e.ebeam && !e.epics);
        assert_eq!(e.streams(), vec![ExtraStream::Bld, ExtraStream::Hsd]);
        assert!(Extras::parse("bld").unwrap_err().contains("bld"));
    }

    #[test]
    fn hsd_peaks_are_waveform_windows_and_some_events_lack_it() {
        let present = (0..200).filter(|&e| hsd_event(7, e).is_some()).count();
        assert!((110..170).contains(&present), "{present}");
        let mut peaks = 0;
        for e in 0..50 {
            let Some(ch) = hsd_event(7, e) else { continue };
            for c in ch {
                let mut at = 0;
                for (&s, &l) in c.startpos.iter().zip(&c.peaklen) {
                    let (s, l) = (s as usize, l as usize);
                    assert_eq!(&c.peaks[at..at + l], &c.waveform[s..s + l]);
                    at += l;
                    peaks += 1;
                }
                assert_eq!(at, c.peaks.len());
            }
        }
        assert!(peaks > 50, "{peaks}");
    }
}
