//! The beamline streams `synth --extras` writes decode, through the XTC2 reader and event
//! builder (small data), to exactly the ground truth: BLD per shot, EPICS values held from the
//! last SlowUpdate (none before the first), digitizer waveforms and peak lists on the events
//! that have them and nothing on the others.

mod synth_support;
use lclstreamer::synth::beamline::{self, EPICS_PVS, HSD_CHANNELS, hsd_chan};
use lclstreamer::synth::{Extras, SynthDetector, SynthParams, generate};
use lclstreamer::xtc::eventbuild::EventBuilder;
use lclstreamer::xtc::run::discover;
use lclstreamer::xtc::{Block, Dgram, TransitionId};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use synth_support::{read_run, read_truth};

fn params(root: &std::path::Path, extras: Extras) -> SynthParams {
    let det = SynthDetector::new("epix100", None).unwrap();
    let mut p = SynthParams::new(root, "mfxsynth01", 7, det);
    p.events = 60;
    p.seed = 11;
    p.text_constants = false;
    p.events_per_enable = 25;
    p.events_per_slow_update = 10;
    p.extras = extras;
    p
}

fn scalar(b: &Block<'_, '_>, name: &str) -> f64 {
    b.var(name).unwrap().scalar().unwrap().as_f64()
}

fn u32s(b: &Block<'_, '_>, name: &str) -> Vec<u32> {
    b.var(name).unwrap().elements::<u32>().unwrap().into_owned()
}

fn u16s(b: &Block<'_, '_>, name: &str) -> Vec<u16> {
    b.var(name).unwrap().elements::<u16>().unwrap().into_owned()
}

/// The epics values of a SlowUpdate block, keyed by alias, as JSON.
fn epics_json(b: &Block<'_, '_>) -> BTreeMap<String, Value> {
    assert_eq!(u32s(b, "StaleFlags"), vec![0]);
    EPICS_PVS
        .iter()
        .map(|p| {
            let v = b.var(p.alias).unwrap();
            let j = match v.string() {
                Some(s) if p.dtype == lclstreamer::xtc::DataType::CHARSTR => json!(s),
                _ => json!(v.scalar().unwrap().as_f64()),
            };
            (p.alias.to_string(), j)
        })
        .collect()
}

#[test]
fn beamline_streams_decode_to_the_truth_event_by_event() {
    let dir = tempfile::tempdir().unwrap();
    let p = params(dir.path(), Extras::ALL);
    let summary = generate(&p).unwrap();
    assert_eq!(p.total_streams(), 4);
    let truth = read_truth(&p);
    assert_eq!(truth.len(), 60);

    let run = discover(&p.out, &p.exp, p.run).unwrap();
    assert_eq!(run.streams.len(), 4);
    let mut b = EventBuilder::for_run(&run, true).unwrap();
    b.set_expected(vec![true, true, false, false]);
    let mut files = BTreeMap::new();
    let mut buf = Vec::new();
    let mut held: Option<BTreeMap<String, Value>> = None;
    let mut epicsinfo = None;
    let (mut ev_i, mut slow, mut with_hsd, mut peaks) = (0usize, 0, 0, 0);
    while let Some(ev) = b.next_event().unwrap() {
        assert!(ev.complete(), "{:?} at {}", ev.service, ev.timestamp);
        if ev.service != TransitionId::L1Accept {
            let part = ev.part(2).expect("the epics stream has every transition");
            let bytes = part.entry.transition.as_ref().unwrap();
            let d = Dgram::parse(bytes, 0).unwrap();
            let lookup = b.stream(2).unwrap().lookup();
            let blocks = d.blocks(lookup).unwrap();
            match ev.service {
                TransitionId::SlowUpdate => {
                    assert_eq!(blocks.len(), 1);
                    held = Some(epics_json(&blocks[0]));
                    slow += 1;
                }
                TransitionId::Configure => {
                    let info = blocks.iter().find(|b| b.schema.det_name == "epicsinfo");
                    let info = info.expect("epicsinfo in the Configure");
                    assert_eq!(info.var("keys").unwrap().string().unwrap(), "epicsname");
                    epicsinfo = Some(
                        EPICS_PVS
                            .iter()
                            .map(|p| info.var(p.alias).unwrap().string().unwrap())
                            .collect::<Vec<_>>(),
                    );
                }
                _ => assert!(
                    blocks.iter().all(|b| b.schema.det_name == "runinfo"),
                    "{:?}",
                    ev.service
                ),
            }
            continue;
        }
        let t = &truth[ev_i];
        assert_eq!(t["timestamp"], json!(ev.timestamp));
        assert_eq!(t["event"], json!(ev_i));
        assert!(ev.part(2).is_none(), "the epics stream records no L1Accept");

        let part = ev.part(1).expect("BLD on every shot");
        let (_, d) = b.read_part(part, &mut files, &mut buf).unwrap().unwrap();
        let lookup = b.stream(1).unwrap().lookup();
        let blocks = d.blocks(lookup).unwrap();
        let ebeam = blocks
            .iter()
            .find(|b| b.schema.det_name == "ebeam")
            .unwrap();
        let gmd = blocks.iter().find(|b| b.schema.det_name == "gmd").unwrap();
        assert_eq!(ebeam.schema.alg.version_string(), "2.0.0");
        assert_eq!(gmd.schema.alg.version_string(), "2.1.0");
        for k in ["ebeamPhotonEnergy", "ebeamCharge", "ebeamL3Energy"] {
            assert_eq!(json!(scalar(ebeam, k)), t["ebeam"][k], "event {ev_i} {k}");
        }
        for k in ["energy", "xpos", "ypos"] {
            assert_eq!(json!(scalar(gmd, k)), t["gmd"][k], "event {ev_i} {k}");
        }

        let want: Value = match &held {
            Some(h) => json!(h),
            None => EPICS_PVS
                .iter()
                .map(|p| (p.alias.to_string(), Value::Null))
                .collect(),
        };
        assert_eq!(t["epics"], want, "event {ev_i}");
        assert_eq!(
            t["epics_update"],
            if slow == 0 {
                Value::Null
            } else {
                json!(slow - 1)
            }
        );

        let regen = beamline::hsd_event(p.seed, ev_i as u64);
        match ev.part(3) {
            None => {
                assert_eq!(t["hsd"], Value::Null, "event {ev_i}");
                assert!(regen.is_none());
            }
            Some(part) => {
                with_hsd += 1;
                let regen = regen.expect("hsd recorded where synth says");
                let (_, d) = b.read_part(part, &mut files, &mut buf).unwrap().unwrap();
                let lookup = b.stream(3).unwrap().lookup();
                let blocks = d.blocks(lookup).unwrap();
                let raw = blocks.iter().find(|b| b.schema.alg.name == "raw").unwrap();
                let fex = blocks.iter().find(|b| b.schema.alg.name == "fex").unwrap();
                for c in 0..HSD_CHANNELS {
                    let ch = hsd_chan(c);
                    let wf = u16s(raw, &ch);
                    let start = u32s(fex, &format!("{ch}_startpos"));
                    let len = u32s(fex, &format!("{ch}_peaklen"));
                    let samples = u16s(fex, &format!("{ch}_peaks"));
                    let tc = &t["hsd"][c];
                    assert_eq!(wf, regen[c].waveform, "event {ev_i} {ch}");
                    assert_eq!(
                        tc["waveform_sum"],
                        json!(wf.iter().map(|&v| u64::from(v)).sum::<u64>())
                    );
                    assert_eq!(tc["startpos"], json!(start));
                    assert_eq!(tc["peaklen"], json!(len));
                    let mut at = 0;
                    for (&s, &l) in start.iter().zip(&len) {
                        let (s, l) = (s as usize, l as usize);
                        assert_eq!(&samples[at..at + l], &wf[s..s + l]);
                        at += l;
                        peaks += 1;
                    }
                    assert_eq!(at, samples.len());
                }
            }
        }
        ev_i += 1;
    }
    assert_eq!(ev_i, 60);
    // SlowUpdates before events 5, 15, ..., 55: events 0..4 have no PV value yet, and each PV
    // changes value within the run (held in between).
    assert_eq!(slow, 6);
    assert!(truth[..5].iter().all(|t| t["epics_update"].is_null()));
    let distinct = |alias: &str| {
        let mut v: Vec<String> = truth
            .iter()
            .map(|t| t["epics"][alias].to_string())
            .collect();
        v.dedup();
        v.len()
    };
    assert!(distinct("wavelength") >= 3 && distinct("det_distance") >= 3);
    assert_eq!(
        epicsinfo.unwrap(),
        EPICS_PVS
            .iter()
            .map(|p| p.pv.to_string())
            .collect::<Vec<_>>()
    );
    assert!((30..55).contains(&with_hsd), "{with_hsd} events with hsd");
    assert!(peaks > 100, "{peaks} peaks");
    // The photon energy varies per shot around the nominal 9.5 keV.
    let e: Vec<f64> = truth
        .iter()
        .map(|t| t["ebeam"]["ebeamPhotonEnergy"].as_f64().unwrap())
        .collect();
    let mean = e.iter().sum::<f64>() / e.len() as f64;
    let sd = (e.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / e.len() as f64).sqrt();
    assert!(
        (mean - 9500.0).abs() < 15.0 && (5.0..40.0).contains(&sd),
        "{mean} ± {sd}"
    );

    // The detector frames are unchanged by the extra streams.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = params(plain_dir.path(), Extras::default());
    generate(&plain).unwrap();
    let (a, bb) = (read_run(&p, true), read_run(&plain, true));
    assert_eq!(a.frames.len(), bb.frames.len());
    assert!(a.frames.iter().zip(&bb.frames).all(|(x, y)| x.raw == y.raw));
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(p.side_dir().join("synth.json")).unwrap())
            .unwrap();
    assert_eq!(
        info["beamline"]["slow_updates"].as_array().unwrap().len(),
        6
    );
    assert!(summary.xtc_files.len() == 8, "{:?}", summary.xtc_files);
}

#[test]
fn each_source_is_optional() {
    let dir = tempfile::tempdir().unwrap();
    let p = params(dir.path(), Extras::parse("gmd").unwrap());
    generate(&p).unwrap();
    let truth = read_truth(&p);
    assert!(truth[0].get("gmd").is_some());
    for k in ["ebeam", "epics", "hsd", "epics_update"] {
        assert!(truth[0].get(k).is_none(), "{k}");
    }
    let run = discover(&p.out, &p.exp, p.run).unwrap();
    assert_eq!(run.streams.len(), 2);
    let rb = read_run(&p, false);
    assert_eq!(rb.frames.len(), 60);
}
