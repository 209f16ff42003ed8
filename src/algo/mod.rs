//! Detector-frame algorithms: peakfinder8, radial maps, hit decision, exact grouped medians.

pub mod hit;
pub mod median;
pub mod peakfinder8;
pub mod radial;
pub mod spots;

pub use hit::HitCriteria;
pub use peakfinder8::{Peak, PeakFinder8, PeakList, Pf8Error, Pf8Params};
