//! Dumps every variable of every L1Accept event lclstreamer's reader builds from a run, so an
//! external reader (psana, `scripts/psana-crosscheck`) can compare them byte for byte.
//!
//! ```text
//! xtc_dump OUT_DIR INPUT...
//! ```
//! `INPUT` is what `lclstreamer inspect` takes (files or a run's xtc directory). Writes
//! `OUT_DIR/data.bin` (the variables' little-endian element bytes, back to back) and
//! `OUT_DIR/index.json`: one record per event (`timestamp`, `run` = number of BeginRuns seen
//! before it, minus one) listing per stream and block each variable's name, type, shape and byte
//! range in `data.bin`.

use anyhow::{Context, Result, bail};
use lclstreamer::inspect::resolve_inputs;
use lclstreamer::xtc::TransitionId;
use lclstreamer::xtc::eventbuild::EventBuilder;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!("usage: xtc_dump OUT_DIR INPUT...");
    }
    let out_dir = PathBuf::from(&args[0]);
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("{}: cannot create", out_dir.display()))?;
    let inputs = resolve_inputs(&args[1..], Path::new("/nonexistent"))?;
    let run = inputs.run.context("the inputs do not form a run")?;
    let mut builder = EventBuilder::for_run(&run, true)?;
    let mut files: BTreeMap<PathBuf, File> = BTreeMap::new();
    let mut buf = Vec::new();
    let data_path = out_dir.join("data.bin");
    let mut data = BufWriter::new(
        File::create(&data_path)
            .with_context(|| format!("{}: cannot create", data_path.display()))?,
    );
    let mut pos = 0u64;
    let mut events = Vec::new();
    let mut run_index: i64 = -1;
    while let Some(ev) = builder.next_event()? {
        if ev.service == TransitionId::BeginRun {
            run_index += 1;
        }
        if ev.service != TransitionId::L1Accept {
            continue;
        }
        let mut streams = Vec::new();
        for part in &ev.parts {
            let Some((_, d)) = builder.read_part(part, &mut files, &mut buf)? else {
                continue;
            };
            let ix = builder.stream(part.stream).context("stream exists")?;
            let blocks = d.blocks(ix.lookup())?;
            let mut dets = Vec::new();
            for b in &blocks {
                let mut vars = Vec::new();
                for v in &b.vars {
                    data.write_all(v.bytes)?;
                    vars.push(serde_json::json!({
                        "name": v.desc.name,
                        "type": v.desc.dtype.name(),
                        "shape": v.shape.dims(),
                        "offset": pos,
                        "nbytes": v.bytes.len(),
                    }));
                    pos += v.bytes.len() as u64;
                }
                dets.push(serde_json::json!({
                    "name": b.schema.det_name,
                    "alg": b.schema.alg.name,
                    "segment": b.schema.segment,
                    "vars": vars,
                }));
            }
            streams.push(serde_json::json!({"stream": part.stream, "detectors": dets}));
        }
        events.push(serde_json::json!({
            "timestamp": ev.timestamp,
            "run": run_index,
            "streams": streams,
        }));
    }
    data.flush()?;
    let index = out_dir.join("index.json");
    std::fs::write(&index, serde_json::to_vec(&events)?)
        .with_context(|| format!("{}: cannot write", index.display()))?;
    Ok(())
}
