//! Output: batch assembly and in-memory HDF5 file images (CXI and LCLStreamer layouts), filters.
