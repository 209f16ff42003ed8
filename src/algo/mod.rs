//! Detector-frame algorithms: peakfinder8, radial maps, hit decision.

pub mod hit;
pub mod peakfinder8;
pub mod radial;
pub mod spots;

pub use hit::HitCriteria;
pub use peakfinder8::{Peak, PeakFinder8, PeakList, Pf8Error, Pf8Params};
