//! Detectors: raw decoding (ePix10ka, Jungfrau), calibration constants, common mode, masks, geometry.
