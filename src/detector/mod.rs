//! Detectors: the model table (`model`), a run's frames (`frame`), raw decoding (ePix10ka,
//! Jungfrau), calibration constants, common mode, masks, geometry.

pub mod assemble;
pub mod calib;
pub mod calib_passes;
pub mod common_mode;
pub mod constants;
pub mod epix100;
pub mod epix10ka;
pub mod epixhr2x2;
pub mod epixm320;
pub mod frame;
pub mod geometry;
pub mod jungfrau;
pub mod mask;
pub mod model;
pub mod psana_geometry;
pub mod synthetic;

pub use calib::{CalibError, Calibrator};
pub use common_mode::CommonModeParams;
pub use constants::{ConstantFiles, ConstantsError, GainConstants};
pub use geometry::{Geometry, GeometryError, SlabLayout};
pub use model::{DetectorModel, Family};
