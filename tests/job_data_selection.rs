//! `lclstreamer run` with a `data:` selection on the LCLS-II samples and on synthetic runs:
//! every selected value of every event equals what the reader decodes when the datagrams are
//! walked directly here (their own L1Accept's value, else the last one a transition since the
//! Configure carried, else missing with `<name>_present` 0), the summary counts the missing
//! ones, run-scope values are attributes, and h5py reads every field of both layouts.

use lclstreamer::output::{Dtype, Presence, Value, read_batch};
use lclstreamer::xtc::names::{DataType, NamesLookup};
use lclstreamer::xtc::writer::{DgramBuilder, VarData};
use lclstreamer::xtc::{Alg, DgramReader, NamesId, Schema, TransitionId, VarDesc, VarView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_lclstreamer");

fn sample(dir: &str) -> Vec<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/xtc2")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xtc2"))
        .collect();
    v.sort();
    v
}

/// What one entry selects, as the test understands it.
#[derive(Clone)]
enum Sel {
    Det {
        det: &'static str,
        alg: Option<&'static str>,
        var: &'static str,
        seg: Option<u32>,
    },
    Pv(&'static str),
}

fn det(det: &'static str, alg: Option<&'static str>, var: &'static str, seg: Option<u32>) -> Sel {
    Sel::Det { det, alg, var, seg }
}

impl Sel {
    fn yaml(&self, name: &str) -> String {
        match self {
            Sel::Pv(pv) => format!("  - {{name: {name}, pv: \"{pv}\"}}\n"),
            Sel::Det { det, alg, var, seg } => format!(
                "  - {{name: {name}, detector: {det}, var: \"{var}\"{}{}}}\n",
                alg.map_or(String::new(), |a| format!(", alg: {a}")),
                seg.map_or(String::new(), |s| format!(", segment: {s}"))
            ),
        }
    }
}

fn dtype(dt: DataType) -> Dtype {
    match dt {
        DataType::UINT8 => Dtype::U8,
        DataType::UINT16 => Dtype::U16,
        DataType::UINT32 => Dtype::U32,
        DataType::UINT64 => Dtype::U64,
        DataType::INT8 => Dtype::I8,
        DataType::INT16 => Dtype::I16,
        DataType::INT64 => Dtype::I64,
        DataType::FLOAT => Dtype::F32,
        DataType::DOUBLE => Dtype::F64,
        _ => Dtype::I32,
    }
}

fn value(v: &VarView) -> Value {
    if v.desc.dtype == DataType::CHARSTR {
        return Value::Str(v.string().unwrap());
    }
    Value::Num {
        dtype: dtype(v.desc.dtype),
        shape: v.shape.dims().to_vec(),
        data: v.bytes.to_vec(),
    }
}

/// One datagram of one stream, reduced to the selected values it carries.
struct Item {
    ts: u64,
    service: TransitionId,
    values: Vec<Option<Value>>,
}

/// Walks the files of each stream (`streams[i]` = its chunks in order) with the reader and
/// returns, per L1Accept key in key order, the expected value of every entry.
fn expected(streams: &[Vec<PathBuf>], sels: &[Sel]) -> BTreeMap<u64, Vec<Option<Value>>> {
    let mut items: Vec<(u64, bool, usize, Item)> = Vec::new();
    for (si, chunks) in streams.iter().enumerate() {
        let mut lookup = NamesLookup::new();
        let mut alias: HashMap<String, String> = HashMap::new();
        for path in chunks {
            let mut r = DgramReader::open(path).unwrap();
            let mut buf = Vec::new();
            while let Some(d) = r.next_into(&mut buf).unwrap() {
                if d.service() == TransitionId::Configure {
                    lookup = NamesLookup::from_configure(&d.root()).unwrap();
                    alias.clear();
                    for b in d.blocks(&lookup).unwrap() {
                        if b.schema.det_name == "epicsinfo" {
                            for v in &b.vars {
                                if let Some(s) = v.string() {
                                    let pv = s.split(',').next().unwrap().to_string();
                                    alias.insert(v.desc.name.clone(), pv);
                                }
                            }
                        }
                    }
                }
                let mut values = vec![None; sels.len()];
                for b in d.blocks(&lookup).unwrap() {
                    let s = b.schema;
                    for (k, sel) in sels.iter().enumerate() {
                        let hit = match sel {
                            Sel::Pv(pv) if s.det_name == "epics" => b.vars.iter().find(|v| {
                                v.desc.name == *pv
                                    || alias.get(&v.desc.name).is_some_and(|a| a == pv)
                            }),
                            Sel::Det { det, alg, var, seg }
                                if s.det_name == *det
                                    && alg.is_none_or(|a| s.alg.name == a)
                                    && seg.is_none_or(|g| s.segment == g) =>
                            {
                                b.var(var)
                            }
                            _ => None,
                        };
                        if let Some(v) = hit {
                            values[k] = Some(value(v));
                        }
                    }
                }
                let ts = d.header.timestamp;
                let l1 = d.service() == TransitionId::L1Accept;
                items.push((
                    ts,
                    l1,
                    si,
                    Item {
                        ts,
                        service: d.service(),
                        values,
                    },
                ));
            }
        }
    }
    items.sort_by_key(|(ts, l1, si, _)| (*ts, *l1, *si));
    let mut held: Vec<Option<Value>> = vec![None; sels.len()];
    let mut out: BTreeMap<u64, Vec<Option<Value>>> = BTreeMap::new();
    for (_, _, _, it) in items {
        match it.service {
            TransitionId::Configure => held.iter_mut().for_each(|h| *h = None),
            TransitionId::L1Accept => {
                let ev = out.entry(it.ts).or_insert_with(|| vec![None; sels.len()]);
                for (k, v) in it.values.into_iter().enumerate() {
                    if v.is_some() {
                        ev[k] = v;
                    }
                }
            }
            _ => {
                for (k, v) in it.values.into_iter().enumerate() {
                    if v.is_some() {
                        held[k] = v;
                    }
                }
            }
        }
        // Held values fill what the event's datagrams so far lack; a later stream's own
        // value of the same event still replaces them (above).
        if it.service == TransitionId::L1Accept {
            let ev = out.get_mut(&it.ts).unwrap();
            for (k, h) in held.iter().enumerate() {
                if ev[k].is_none() {
                    ev[k] = h.clone();
                }
            }
        }
    }
    out
}

fn run_job(
    dir: &Path,
    files: &[PathBuf],
    extra: &str,
    data: &str,
    ranks: u32,
    layout: &str,
) -> serde_json::Value {
    let out = dir.join(format!("out-{layout}"));
    let cfg = dir.join(format!("job-{layout}.yaml"));
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    std::fs::write(
        &cfg,
        format!(
            "source:\n  files: [{}]\n{extra}data:\n{data}output:\n  batch_size: 4\n  layout: {layout}\n  compression: none\n  sinks:\n    - {{kind: files, dir: {}}}\nparallel:\n  events_per_unit: 3\n",
            files.join(", "),
            out.display()
        ),
    )
    .unwrap();
    let summary = dir.join(format!("s-{layout}.json"));
    let mut cmd = if ranks == 1 {
        Command::new(EXE)
    } else {
        let mut c = Command::new("mpirun");
        c.args(["--oversubscribe", "-n", &ranks.to_string(), EXE]);
        c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        c
    };
    let o = cmd
        .args(["run", "--quiet", "--config"])
        .arg(&cfg)
        .arg("--summary")
        .arg(&summary)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap()
}

/// Delivered events' fields by key.
type Delivered = BTreeMap<u64, Vec<lclstreamer::output::Field>>;

/// Every delivered event's fields, by key; checks each event arrives once.
fn delivered(dir: &Path, layout: &str) -> (Delivered, Vec<(String, Value)>) {
    let mut got = BTreeMap::new();
    let mut run_values = Vec::new();
    for e in std::fs::read_dir(dir.join(format!("out-{layout}"))).unwrap() {
        let (b, _) = read_batch(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        run_values = b.meta.values.clone();
        for ev in b.events {
            assert!(
                got.insert(ev.timestamp, ev.fields).is_none(),
                "event delivered twice"
            );
        }
    }
    (got, run_values)
}

/// Runs the job on `streams` with `sels` and compares every value, flag and missing count.
fn check_run(
    streams: &[Vec<PathBuf>],
    sels: &[(&str, Sel)],
    extra: &str,
    extra_data: &str,
    ranks: u32,
) -> (tempfile::TempDir, Vec<(String, Value)>) {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = streams.iter().map(|c| c[0].clone()).collect();
    let data: String = sels.iter().map(|(n, s)| s.yaml(n)).collect::<String>() + extra_data;
    let summary = run_job(tmp.path(), &files, extra, &data, ranks, "cxi");
    let only: Vec<Sel> = sels.iter().map(|(_, s)| s.clone()).collect();
    let want = expected(streams, &only);
    let (got, run_values) = delivered(tmp.path(), "cxi");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "delivered event keys"
    );
    assert_eq!(summary["events_sent"], want.len() as u64);
    for (ts, w) in &want {
        let g: Vec<_> = got[ts]
            .iter()
            .filter(|f| f.presence != Presence::Always)
            .collect();
        assert_eq!(g.len(), sels.len(), "event {ts:#x}: fields {g:?}");
        for (k, (name, _)) in sels.iter().enumerate() {
            assert_eq!(g[k].name, *name);
            match &w[k] {
                Some(v) => {
                    assert_eq!(g[k].presence, Presence::Present, "{name} at {ts:#x}");
                    assert_eq!(&g[k].value, v, "{name} at {ts:#x}");
                }
                None => {
                    assert_eq!(
                        g[k].presence,
                        Presence::Missing,
                        "{name} at {ts:#x} should be missing"
                    );
                    if let Value::Num {
                        dtype: Dtype::F32 | Dtype::F64,
                        ..
                    } = g[k].value
                    {
                        assert!(
                            g[k].value.to_f64s().iter().all(|x| x.is_nan()),
                            "{name} fill"
                        );
                    }
                }
            }
        }
    }
    let missing = summary["missing"].as_array().unwrap();
    for (k, (name, _)) in sels.iter().enumerate() {
        let n = want.values().filter(|w| w[k].is_none()).count() as u64;
        let m = missing.iter().find(|m| m["name"] == *name).unwrap();
        assert_eq!(m["events"], n, "missing count of {name}");
    }
    (tmp, run_values)
}

fn one_per_stream(files: Vec<PathBuf>) -> Vec<Vec<PathBuf>> {
    files.into_iter().map(|f| vec![f]).collect()
}

fn count_present(streams: &[Vec<PathBuf>], sel: Sel) -> (usize, usize) {
    let w = expected(streams, &[sel]);
    (w.values().filter(|v| v[0].is_some()).count(), w.len())
}

#[test]
fn mixed_rate_pvs_strings_enums_arrays_and_held_scan_values() {
    let streams = one_per_stream(sample("mixed_rate"));
    let sels = [
        ("gcc", Sel::Pv("HX2:DVD:GCC:01:PMON")),
        ("gpi", Sel::Pv("HX2:DVD:GPI:01:PMON")),
        ("array1", det("xpphsd", Some("raw"), "array1Pgp", Some(2))),
        ("int_pgp", det("xpphsd", Some("raw"), "intPgp", Some(0))),
        (
            "float_fex3",
            det("xpphsd", Some("fex"), "floatFex", Some(3)),
        ),
        ("fex_str", det("xpphsd", Some("fex"), "charStrFex", Some(1))),
        (
            "enum1",
            det("xpphsd", Some("fex"), "enumFex1:MyEnumName", Some(0)),
        ),
        ("cspad", det("xppcspad", None, "arrayRaw", Some(3))),
        ("motor1", det("scan", None, "motor1", None)),
    ];
    // The reference walk agrees with the README: the PV from the first SlowUpdate (key 29)
    // on, s001 values in 10 events.
    assert_eq!(
        count_present(&streams, Sel::Pv("HX2:DVD:GCC:01:PMON")),
        (75, 100)
    );
    assert_eq!(count_present(&streams, sels[2].1.clone()), (10, 100));
    let prescale = "  - {name: prescale, detector: xpphsd, alg: config, var: raw_prescale, segment: 0, scope: run}\n  - {name: prescale3, detector: xpphsd, alg: config, var: raw_prescale, segment: 3, scope: run}\n";
    let (_tmp, run_values) = check_run(&streams, &sels, "", prescale, 3);
    let get = |n: &str| run_values.iter().find(|(k, _)| k == n).unwrap().1.to_f64s();
    // BeginRun's values replace the Configure's.
    assert_eq!(get("prescale"), [1000.0, 1001.0, 1002.0, 1003.0]);
    assert_eq!(get("prescale3"), [1300.0, 1301.0, 1302.0, 1303.0]);
}

#[test]
fn multi_seg_epics_colliding_names_ids_and_slow_update_strings() {
    let streams = one_per_stream(sample("multi-seg-epics"));
    let sels = [
        ("v1", Sel::Pv("epicsvar1")),
        ("v2", Sel::Pv("epicsvar2")),
        ("background", Sel::Pv("background")),
        ("hsd", det("hsd", None, "calib", None)),
        ("andor", det("andor", Some("raw"), "calib", Some(1))),
    ];
    assert_eq!(count_present(&streams, Sel::Pv("background")), (9, 15));
    check_run(&streams, &sels, "", "", 1);
}

#[test]
fn intg_det_values_at_three_rates() {
    let streams = one_per_stream(sample("intg_det"));
    let sels = [
        ("hsd", det("hsd", None, "calib", None)),
        ("andor", det("andor", None, "calib", None)),
        ("epix", det("epix", None, "calib", None)),
    ];
    assert_eq!(count_present(&streams, sels[1].1.clone()), (5, 17));
    let expt = "  - {name: expt, detector: runinfo, var: expt, segment: 0, scope: run}\n";
    let (_tmp, rv) = check_run(&streams, &sels, "", expt, 2);
    assert_eq!(rv, [("expt".to_string(), Value::Str("xpptut15".into()))]);
}

#[test]
fn fakesteps_step_values_held_across_steps() {
    let streams = one_per_stream(sample("fakesteps"));
    let sels = [
        ("motor1", det("scan", None, "motor1", Some(0))),
        ("motor2", det("scan", None, "motor2", Some(0))),
        ("andor", det("andor", None, "calib", None)),
    ];
    assert_eq!(count_present(&streams, sels[0].1.clone()), (10, 10));
    check_run(&streams, &sels, "", "", 1);
}

#[test]
fn a_selection_naming_nothing_in_the_run_is_one_start_up_error() {
    let tmp = tempfile::tempdir().unwrap();
    let files = sample("fakesteps");
    let cfg = tmp.path().join("j.yaml");
    for (data, want) in [
        (
            "[{name: m, detector: scan, var: motor1}]",
            "segments [0, 1]",
        ),
        (
            "[{name: m, detector: scan, var: motor9, segment: 0}]",
            "motor9",
        ),
        ("[{name: m, pv: NOPE}]", "NOPE"),
        ("[{name: hit, pv: x}]", "hit"),
        ("[{name: m, pv: x, var: y}]", "pv"),
        (
            "[{name: m, detector: scan, var: motor1, segmnt: 0}]",
            "segmnt",
        ),
    ] {
        std::fs::write(
            &cfg,
            format!(
                "source:\n  files: [{}, {}]\ndata: {data}\noutput:\n  sinks: [{{kind: files, dir: {}}}]\n",
                files[0].display(),
                files[1].display(),
                tmp.path().join("o").display()
            ),
        )
        .unwrap();
        let o = Command::new(EXE)
            .args(["run", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{data}: should fail");
        assert!(
            err.contains(want) && err.matches("lclstreamer:").count() == 1,
            "{data}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Synthetic runs.

/// A one-stream run built here: an `epics` Names whose variable is an alias of a PV named in
/// `epicsinfo`, SlowUpdates carrying it (the first after event 2), a waveform detector whose
/// peak list changes length every event (ragged), a 3-D array and a string; event 3 lacks
/// the waveform detector.
fn write_synthetic(dir: &Path) -> PathBuf {
    use lclstreamer::synth::run::Clock;
    use lclstreamer::xtc::smalldata::{runinfo_names_id, runinfo_schema};
    use lclstreamer::xtc::stream_writer::StreamWriter;
    let node = 0;
    let schema = |det: &str, alg: Alg, vars: Vec<VarDesc>| Schema {
        det_type: det.into(),
        det_name: det.into(),
        det_id: format!("{det}_1"),
        alg,
        segment: 0,
        vars,
    };
    let epics = schema(
        "epics",
        Alg::new("raw", 2, 0, 0),
        vec![VarDesc::new("gmd_alias", DataType::DOUBLE, 0)],
    );
    let info = schema(
        "epicsinfo",
        Alg::new("epicsinfo", 1, 0, 0),
        vec![
            VarDesc::new("keys", DataType::CHARSTR, 1),
            VarDesc::new("gmd_alias", DataType::CHARSTR, 1),
        ],
    );
    let wave = schema(
        "hsd",
        Alg::new("fex", 4, 5, 6),
        vec![
            VarDesc::new("peaks", DataType::UINT16, 1),
            VarDesc::new("cube", DataType::INT16, 3),
            VarDesc::new("label", DataType::CHARSTR, 1),
        ],
    );
    let (id_e, id_i, id_w) = (
        NamesId::new(node, 1),
        NamesId::new(node, 2),
        NamesId::new(node, 3),
    );
    let mut w = StreamWriter::create(dir, "tstx00118", 1, 0, false).unwrap();
    let mut clock = Clock::for_run(1);
    let mut t = |w: &mut StreamWriter, id: TransitionId, f: &dyn Fn(&mut DgramBuilder)| {
        let mut b = DgramBuilder::new(clock.take(), id, 1, node);
        f(&mut b);
        w.write(b.bytes()).unwrap();
    };
    t(&mut w, TransitionId::Configure, &|b| {
        b.add_names(runinfo_names_id(node), &runinfo_schema(0))
            .unwrap();
        b.add_names(id_e, &epics).unwrap();
        b.add_names(id_i, &info).unwrap();
        b.add_names(id_w, &wave).unwrap();
        b.add_data(
            id_i,
            &info,
            &[
                VarData::string("epicsname,pvname"),
                VarData::string("SXR:GMD:ENRC,xyz"),
            ],
        )
        .unwrap();
    });
    t(&mut w, TransitionId::BeginRun, &|b| {
        b.add_data(
            runinfo_names_id(node),
            &runinfo_schema(0),
            &[VarData::string("tstx00118"), VarData::scalar(1u32)],
        )
        .unwrap();
    });
    t(&mut w, TransitionId::BeginStep, &|_| {});
    t(&mut w, TransitionId::Enable, &|_| {});
    for ev in 0..8u16 {
        if ev == 3 || ev == 6 {
            let v = 1.5 + f64::from(ev);
            t(&mut w, TransitionId::SlowUpdate, &|b| {
                b.add_data(id_e, &epics, &[VarData::scalar(v)]).unwrap();
            });
        }
        t(&mut w, TransitionId::L1Accept, &|b| {
            if ev == 3 {
                return;
            }
            let peaks: Vec<u16> = (0..(ev % 4)).map(|i| 100 * ev + i).collect();
            let cube: Vec<i16> = (0..24).map(|i| i * (ev as i16) - 7).collect();
            b.add_data(
                id_w,
                &wave,
                &[
                    VarData::array(&[peaks.len() as u32], &peaks),
                    VarData::array(&[2, 3, 4], &cube),
                    VarData::string(&format!("shot {ev}")),
                ],
            )
            .unwrap();
        });
    }
    for id in [
        TransitionId::Disable,
        TransitionId::EndStep,
        TransitionId::EndRun,
    ] {
        t(&mut w, id, &|_| {});
    }
    let files = w.finish().unwrap();
    files[0].clone()
}

#[test]
fn synthetic_pv_alias_ragged_waveforms_3d_arrays_and_strings() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_synthetic(&tmp.path().join("xtc"));
    let streams = vec![vec![f]];
    let sels = [
        ("gmd", Sel::Pv("SXR:GMD:ENRC")),
        ("peaks", det("hsd", Some("fex"), "peaks", None)),
        ("cube", det("hsd", None, "cube", None)),
        ("label", det("hsd", None, "label", None)),
    ];
    let w = expected(&streams, &[sels[0].1.clone()]);
    assert_eq!(w.values().filter(|v| v[0].is_some()).count(), 5);
    check_run(&streams, &sels, "", "", 2);
}

#[test]
fn synth_jungfrau_frames_with_per_module_scalars_from_every_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let out = Command::new(EXE)
        .args(["synth", "--out"])
        .arg(&root)
        .args([
            "--exp",
            "mfxp12345",
            "--run",
            "5",
            "--detector",
            "jungfrau4M",
            "--seed",
            "3",
        ])
        .args(["--streams", "4", "--events", "6"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xtc = root.join("mfx/mfxp12345/xtc");
    let mut by_stream: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(&xtc).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        if n.ends_with(".xtc2") && !n.ends_with(".smd.xtc2") {
            by_stream
                .entry(n[..n.len() - 10].to_string())
                .or_default()
                .push(p);
        }
    }
    let streams: Vec<Vec<PathBuf>> = by_stream
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    assert_eq!(streams.len(), 4);
    let sels = [
        (
            "frame_cnt0",
            det("jungfrau4M", Some("raw"), "frame_cnt", Some(0)),
        ),
        (
            "frame_cnt5",
            det("jungfrau4M", Some("raw"), "frame_cnt", Some(5)),
        ),
        (
            "hot7",
            det("jungfrau4M", Some("raw"), "numHotPixels", Some(7)),
        ),
    ];
    let extra = "  detector: jungfrau4M\nprocessing: {steps: none}\n";
    let (tmp2, _) = check_run(&streams, &sels, extra, "", 3);
    // Raw frames come along when no step runs.
    let (got, _) = delivered(tmp2.path(), "cxi");
    assert_eq!(got.len(), 6);
    for e in std::fs::read_dir(tmp2.path().join("out-cxi")).unwrap() {
        let (b, _) = read_batch(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        assert!(
            b.events
                .iter()
                .all(|e| matches!(e.frame, Some(lclstreamer::output::Frame::U16(_))))
        );
        assert!(b.events.iter().all(|e| e.scalar("hit").is_none()));
    }
}

/// Reads every field of every batch of a directory with h5py and prints, per event key, each
/// field as `[present, value]` (numbers as nested lists, strings as str); ragged fields are
/// rebuilt from `<name>_offsets` and `<name>_shape`. Checks the CXI aliases on the way.
const H5PY_DUMP: &str = r#"
import json, os, sys
import h5py, numpy as np
src, layout = sys.argv[1], sys.argv[2]
out = {}
for name in sorted(os.listdir(src)):
    with h5py.File(os.path.join(src, name), "r") as f:
        g = f["LCLS"] if layout == "cxi" else f
        names = json.loads(f.attrs["field_names"])
        ts = g["timestamp"][:]
        for i, t in enumerate(ts):
            ev = {}
            for n in names:
                ds = g[n]
                present = int(g[n + "_present"][i]) if (n + "_present") in g else 1
                if ds.attrs["layout"] == "ragged":
                    o = g[n + "_offsets"][:]
                    v = ds[o[i]:o[i + 1]].reshape(tuple(g[n + "_shape"][i])).tolist()
                elif h5py.check_string_dtype(ds.dtype):
                    v = ds.asstr()[i]
                else:
                    v = ds[i].tolist()
                ev[n] = [present, v]
            out[str(int(t))] = ev
        if layout == "cxi":
            np.testing.assert_array_equal(g["photon_energy_eV"][:], g["gmd"][:])
            assert g["detector_1/EncoderValue"].shape == g["label"].shape
print(json.dumps(out).replace("NaN", "null"))
"#;

fn nest(flat: &[f64], shape: &[u32]) -> serde_json::Value {
    match shape {
        [] => serde_json::json!(flat[0]),
        [_] => serde_json::json!(flat),
        [first, rest @ ..] => {
            let stride = rest.iter().map(|&d| d as usize).product::<usize>();
            (0..*first as usize)
                .map(|i| nest(&flat[i * stride..(i + 1) * stride], rest))
                .collect::<Vec<_>>()
                .into()
        }
    }
}

/// Every JSON number as f64 (h5py gives ints for integer types).
fn as_f64(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        serde_json::Value::Array(a) => a.iter().map(as_f64).collect::<Vec<_>>().into(),
        other => other.clone(),
    }
}

#[test]
fn h5py_reads_every_field_of_both_layouts() {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if !py.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} missing under CI",
            py.display()
        );
        eprintln!(
            "SKIPPED: {} missing; run scripts/setup-python",
            py.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let f = write_synthetic(&tmp.path().join("xtc"));
    let sels = [
        ("gmd", Sel::Pv("SXR:GMD:ENRC")),
        ("peaks", det("hsd", Some("fex"), "peaks", None)),
        ("cube", det("hsd", None, "cube", None)),
        ("label", det("hsd", None, "label", None)),
    ];
    let only: Vec<Sel> = sels.iter().map(|(_, s)| s.clone()).collect();
    let want = expected(&[vec![f.clone()]], &only);
    let mut data: String = sels.iter().map(|(n, s)| s.yaml(n)).collect();
    data = data.replacen(
        "pv: \"SXR:GMD:ENRC\"",
        "pv: \"SXR:GMD:ENRC\", role: photon_energy_eV",
        1,
    );
    data += "  - {name: distance, pv: \"SXR:GMD:ENRC\", role: detector_distance, fill: -1}\n";
    for layout in ["cxi", "lclstreamer"] {
        run_job(tmp.path(), std::slice::from_ref(&f), "", &data, 1, layout);
        let o = Command::new(&py)
            .arg("-c")
            .arg(H5PY_DUMP)
            .arg(tmp.path().join(format!("out-{layout}")))
            .arg(layout)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(got.as_object().unwrap().len(), want.len());
        for (ts, w) in &want {
            let ev = &got[ts.to_string()];
            for (k, (name, _)) in sels.iter().enumerate() {
                let [present, v] = [&ev[name][0], &ev[name][1]];
                match &w[k] {
                    None => assert_eq!(present, 0, "{layout} {name} {ts:#x}"),
                    Some(val) => {
                        assert_eq!(present, 1, "{layout} {name} {ts:#x}");
                        let expect = match val {
                            Value::Str(s) => serde_json::json!(s),
                            Value::Num { shape, .. } => nest(&val.to_f64s(), shape),
                        };
                        assert_eq!(as_f64(v), as_f64(&expect), "{layout} {name} {ts:#x}");
                    }
                }
            }
            // The distance entry (same PV) is -1 where the PV is missing.
            let dist = &ev["distance"];
            if w[0].is_none() {
                assert_eq!(as_f64(dist), as_f64(&serde_json::json!([0, -1.0])));
            }
        }
    }
}
