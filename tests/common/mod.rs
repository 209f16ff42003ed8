//! Helpers shared by integration tests.
#![allow(dead_code)]

use lclstreamer::xtc::{Dgram, DgramReader, NamesLookup, TransitionId};
use std::path::{Path, PathBuf};

/// The LCLS-II XTC2 sample folder (`tests/data/xtc2`, provenance and licence in its README).
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/xtc2")
}

/// One sample file.
pub fn sample(rel: &str) -> PathBuf {
    samples().join(rel)
}

/// Owned copy of one datagram.
#[derive(Debug, Clone)]
pub struct Owned {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl Owned {
    pub fn view(&self) -> Dgram<'_> {
        Dgram::parse(&self.bytes, self.offset).unwrap()
    }
    pub fn service(&self) -> TransitionId {
        self.view().service()
    }
}

/// Every datagram of a file.
pub fn read_all(path: &Path) -> Vec<Owned> {
    let mut r = DgramReader::open(path).unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(d) = r.next_into(&mut buf).unwrap() {
        out.push(Owned {
            offset: d.offset,
            bytes: d.bytes.to_vec(),
        });
    }
    assert!(r.truncation().is_none(), "{} is truncated", path.display());
    out
}

/// The lookup of the first Configure in `dgrams`.
pub fn first_lookup(dgrams: &[Owned]) -> NamesLookup {
    let c = dgrams
        .iter()
        .find(|d| d.service() == TransitionId::Configure)
        .expect("a Configure");
    NamesLookup::from_configure(&c.view().root()).unwrap()
}

/// Asserts two byte strings are equal, reporting the first differing offset (not the bytes).
pub fn assert_same_bytes(got: &[u8], want: &[u8], ctx: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let lo = at.saturating_sub(4);
        panic!(
            "{ctx}: lengths {} vs {}, first difference at byte {at}: got {:?} want {:?}",
            got.len(),
            want.len(),
            &got[lo..(at + 8).min(got.len())],
            &want[lo..(at + 8).min(want.len())]
        );
    }
}
