//! Data selection: the `data` entries resolved against a Configure (stream by stream, since
//! NamesIds collide across streams), their values taken from each event's datagrams, and the
//! values that transitions carry held until the next one, as psana does (EPICS from
//! SlowUpdates, scan values from BeginRun/BeginStep): an event's value is its own L1Accept's,
//! else the last one a transition since the Configure carried, else missing.

use crate::config::{DataEntry, Scope};
use crate::output::{Dtype, Field, Presence, Value};
use crate::xtc::names::{DataType, NamesLookup};
use crate::xtc::run::RunFiles;
use crate::xtc::{Dgram, DgramReader, NamesId, TransitionId, VarView};
use std::collections::HashMap;

/// `detName` of the Names that carry EPICS PVs.
pub const EPICS_DET: &str = "epics";
/// `detName` of the Names that map EPICS aliases to PV names.
pub const EPICSINFO_DET: &str = "epicsinfo";

/// What kind of value an entry has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Num { dtype: Dtype, rank: u32 },
    Str,
}

impl Kind {
    fn of(dt: DataType, rank: u32) -> Kind {
        let dtype = match dt {
            DataType::UINT8 => Dtype::U8,
            DataType::UINT16 => Dtype::U16,
            DataType::UINT32 => Dtype::U32,
            DataType::UINT64 => Dtype::U64,
            DataType::INT8 => Dtype::I8,
            DataType::INT16 => Dtype::I16,
            DataType::INT32 | DataType::ENUMVAL | DataType::ENUMDICT => Dtype::I32,
            DataType::INT64 => Dtype::I64,
            DataType::FLOAT => Dtype::F32,
            DataType::DOUBLE => Dtype::F64,
            DataType::CHARSTR => return Kind::Str,
        };
        Kind::Num { dtype, rank }
    }

    /// The fill value of this kind.
    fn fill(self, fill: Option<f64>) -> Value {
        match self {
            Kind::Str => Value::Str(String::new()),
            Kind::Num { dtype, rank } => {
                let v = fill.unwrap_or(match dtype {
                    Dtype::F32 | Dtype::F64 => f64::NAN,
                    _ => 0.0,
                });
                Value::Num {
                    dtype,
                    shape: vec![0; rank as usize],
                    data: dtype.encode(v),
                }
            }
        }
    }
}

/// The value of a decoded variable.
pub fn value_of(v: &VarView<'_, '_>) -> Value {
    match v.string() {
        Some(s) => Value::Str(s),
        None => match Kind::of(v.desc.dtype, v.desc.rank) {
            Kind::Num { dtype, .. } => Value::Num {
                dtype,
                shape: v.shape.dims().to_vec(),
                data: v.bytes.to_vec(),
            },
            Kind::Str => Value::Str(String::new()),
        },
    }
}

/// EPICS alias → PV name, from the `epicsinfo` values of a Configure (`keys` lists the
/// comma-separated fields of every other variable; the field `epicsname` is the PV name).
fn epics_aliases(d: &Dgram<'_>, lookup: &NamesLookup) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for b in d.blocks(lookup)? {
        if b.schema.det_name != EPICSINFO_DET {
            continue;
        }
        let keys = b.var("keys").and_then(|v| v.string()).unwrap_or_default();
        let at = keys.split(',').position(|k| k == "epicsname").unwrap_or(0);
        for v in &b.vars {
            if v.desc.name == "keys" {
                continue;
            }
            if let Some(pv) = v
                .string()
                .and_then(|s| s.split(',').nth(at).map(str::to_owned))
            {
                out.insert(v.desc.name.clone(), pv);
            }
        }
    }
    Ok(out)
}

/// The `data` entries of one scope resolved against one Configure.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    names: Vec<String>,
    fills: Vec<Option<f64>>,
    ragged: Vec<bool>,
    kinds: Vec<Option<Kind>>,
    /// (stream, NamesId) → (entry, variable index) pairs it carries.
    map: HashMap<(u32, NamesId), Vec<(usize, usize)>>,
}

impl Resolved {
    /// Resolves `entries` (those of `scope`) against the per-stream Configure datagrams. With
    /// `strict`, an entry no stream declares is an error naming it; otherwise it stays missing.
    pub fn new(
        entries: &[DataEntry],
        scope: Scope,
        configures: &[(u32, &[u8])],
        strict: bool,
    ) -> anyhow::Result<Resolved> {
        let mut parsed = Vec::new();
        for &(stream, bytes) in configures {
            let d = Dgram::parse(bytes, 0)?;
            let lookup = NamesLookup::from_configure(&d.root())?;
            let aliases = epics_aliases(&d, &lookup)?;
            parsed.push((stream, lookup, aliases));
        }
        let mut r = Resolved::default();
        for (i, e) in entries.iter().enumerate().filter(|(_, e)| e.scope == scope) {
            let k = r.names.len();
            let at = format!("data[{i}] ({})", e.name);
            let mut kind: Option<Kind> = None;
            let mut segments = Vec::new();
            let mut targets = Vec::new();
            for (stream, lookup, aliases) in &parsed {
                for (id, s) in lookup.entries() {
                    let var = match (&e.pv, &e.detector, &e.var) {
                        (Some(pv), ..) if s.det_name == EPICS_DET => s.vars.iter().position(|v| {
                            &v.name == pv || aliases.get(&v.name).is_some_and(|p| p == pv)
                        }),
                        (None, Some(det), Some(var))
                            if &s.det_name == det
                                && e.alg.as_ref().is_none_or(|a| &s.alg.name == a)
                                && e.segment.is_none_or(|g| g == s.segment) =>
                        {
                            s.var_index(var)
                        }
                        _ => None,
                    };
                    let Some(v) = var else { continue };
                    let desc = &s.vars[v];
                    let this = Kind::of(desc.dtype, desc.rank);
                    if kind.is_some_and(|k| k != this) {
                        anyhow::bail!(
                            "{at}: declared as {:?} and as {this:?} (stream {stream}, {}/{} \
                             segment {}); give alg or segment",
                            kind.expect("checked"),
                            s.det_name,
                            s.alg.name,
                            s.segment
                        );
                    }
                    kind = Some(this);
                    if !segments.contains(&s.segment) {
                        segments.push(s.segment);
                    }
                    targets.push(((*stream, id), v));
                }
            }
            if e.pv.is_none() && e.segment.is_none() && segments.len() > 1 {
                segments.sort_unstable();
                anyhow::bail!("{at}: declared for segments {segments:?}; give `segment`");
            }
            if kind.is_none() && strict {
                anyhow::bail!("{at}: {}", describe_missing(e, &parsed));
            }
            for (key, v) in targets {
                r.map.entry(key).or_default().push((k, v));
            }
            r.names.push(e.name.clone());
            r.fills.push(e.fill);
            r.ragged.push(e.ragged);
            r.kinds.push(kind);
        }
        Ok(r)
    }

    /// Number of resolved entries.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True without entries.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Copies the values datagram `d` of `stream` carries into `out` (one slot per entry).
    pub fn extract(
        &self,
        stream: u32,
        d: &Dgram<'_>,
        lookup: &NamesLookup,
        out: &mut [Option<Value>],
    ) -> anyhow::Result<()> {
        if self.map.is_empty() {
            return Ok(());
        }
        for b in d.blocks(lookup)? {
            let Some(targets) = self.map.get(&(stream, b.names_id)) else {
                continue;
            };
            for &(k, v) in targets {
                if let Some(var) = b.vars.get(v) {
                    out[k] = Some(value_of(var));
                }
            }
        }
        Ok(())
    }

    /// The fields of one event: its own values, else the held ones, else the fill value.
    pub fn fields(&self, own: &mut [Option<Value>], held: &[Option<Value>]) -> Vec<Field> {
        (0..self.len())
            .map(|k| {
                let (value, presence) = match own[k].take().or_else(|| held[k].clone()) {
                    Some(v) => (v, Presence::Present),
                    None => (
                        self.kinds[k]
                            .unwrap_or(Kind::Num {
                                dtype: Dtype::F64,
                                rank: 0,
                            })
                            .fill(self.fills[k]),
                        Presence::Missing,
                    ),
                };
                Field {
                    name: self.names[k].clone(),
                    value,
                    presence,
                    ragged: self.ragged[k],
                }
            })
            .collect()
    }
}

fn describe_missing(
    e: &DataEntry,
    parsed: &[(u32, NamesLookup, HashMap<String, String>)],
) -> String {
    let mut known: Vec<String> = Vec::new();
    for (_, lookup, aliases) in parsed {
        for (_, s) in lookup.entries() {
            let relevant = match (&e.pv, &e.detector) {
                (Some(_), _) => s.det_name == EPICS_DET,
                (None, Some(det)) => &s.det_name == det,
                _ => false,
            };
            if !relevant {
                continue;
            }
            for v in &s.vars {
                let k = match (&e.pv, aliases.get(&v.name)) {
                    (Some(_), Some(pv)) => pv.clone(),
                    (Some(_), None) => v.name.clone(),
                    _ => format!(
                        "{}/{} segment {}: {}",
                        s.det_name, s.alg.name, s.segment, v.name
                    ),
                };
                if !known.contains(&k) {
                    known.push(k);
                }
            }
        }
    }
    let what = match (&e.pv, &e.detector, &e.var) {
        (Some(pv), ..) => format!("no stream's Configure declares EPICS PV {pv:?}"),
        (None, Some(det), Some(var)) => format!(
            "no stream's Configure declares detector {det:?}{}{} variable {var:?}",
            e.alg
                .as_ref()
                .map_or(String::new(), |a| format!(" alg {a:?}")),
            e.segment.map_or(String::new(), |s| format!(" segment {s}"))
        ),
        _ => "nothing to select".into(),
    };
    if known.is_empty() {
        what
    } else {
        known.truncate(40);
        format!("{what}; it declares {}", known.join(", "))
    }
}

/// The selection state of a worker between Configures: the resolved event-scope entries and
/// the values transitions carried.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub resolved: Resolved,
    pub held: Vec<Option<Value>>,
}

impl Selection {
    /// Resolves the event-scope entries against a Configure; held values start empty.
    pub fn configure(
        entries: &[DataEntry],
        configures: &[(u32, &[u8])],
        strict: bool,
    ) -> anyhow::Result<Selection> {
        let resolved = Resolved::new(entries, Scope::Event, configures, strict)?;
        Ok(Selection {
            held: vec![None; resolved.len()],
            resolved,
        })
    }

    /// Holds the values a (non-Configure) transition datagram of `stream` carries.
    pub fn transition(
        &mut self,
        stream: u32,
        d: &Dgram<'_>,
        lookup: &NamesLookup,
    ) -> anyhow::Result<()> {
        let mut own = vec![None; self.resolved.len()];
        self.resolved.extract(stream, d, lookup, &mut own)?;
        for (h, v) in self.held.iter_mut().zip(own) {
            if v.is_some() {
                *h = v;
            }
        }
        Ok(())
    }
}

/// Each stream's datagrams before its first L1Accept (Configure first), from its first chunk.
pub fn leading_transitions(run: &RunFiles) -> anyhow::Result<Vec<(u32, Vec<Vec<u8>>)>> {
    let mut out = Vec::new();
    for s in &run.streams {
        let Some(c0) = s.chunks.first() else {
            continue;
        };
        let mut r = DgramReader::open(&c0.path)?;
        let mut dgrams = Vec::new();
        let mut buf = Vec::new();
        while let Some(d) = r.next_into(&mut buf)? {
            if d.service() == TransitionId::L1Accept {
                break;
            }
            if dgrams.is_empty() && d.service() != TransitionId::Configure {
                anyhow::bail!("{}: does not start with a Configure", c0.path.display());
            }
            dgrams.push(buf.clone());
        }
        out.push((s.stream, dgrams));
    }
    Ok(out)
}

/// Checks every entry against the run's first Configure and returns the run-scope values:
/// the last value the transitions before the first event carried (Configure included).
pub fn check_and_run_values(
    entries: &[DataEntry],
    run: &RunFiles,
) -> anyhow::Result<Vec<(String, Value)>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let leading = leading_transitions(run)?;
    let configures: Vec<(u32, &[u8])> = leading
        .iter()
        .filter_map(|(s, d)| d.first().map(|b| (*s, &b[..])))
        .collect();
    Selection::configure(entries, &configures, true)?;
    let resolved = Resolved::new(entries, Scope::Run, &configures, true)?;
    let mut values = vec![None; resolved.len()];
    for (stream, dgrams) in &leading {
        let Some(first) = dgrams.first() else {
            continue;
        };
        let lookup = NamesLookup::from_configure(&Dgram::parse(first, 0)?.root())?;
        for bytes in dgrams {
            resolved.extract(*stream, &Dgram::parse(bytes, 0)?, &lookup, &mut values)?;
        }
    }
    let run_entries: Vec<&DataEntry> = entries.iter().filter(|e| e.scope == Scope::Run).collect();
    run_entries
        .iter()
        .zip(values)
        .map(|(e, v)| {
            v.map(|v| (e.name.clone(), v)).ok_or_else(|| {
                anyhow::anyhow!(
                    "data entry {:?} (scope run): no transition before the first event carries a value",
                    e.name
                )
            })
        })
        .collect()
}
