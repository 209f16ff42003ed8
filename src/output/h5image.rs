//! In-memory HDF5 files (core driver, no backing store): create, turn into bytes, reopen from
//! bytes, and raw chunk access (`H5Dwrite_chunk` / `H5Dread_chunk`).

use std::ffi::{CString, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

use hdf5::{Dataset, File};
use hdf5_metno_sys::h5d::{H5Dget_chunk_info_by_coord, H5Dread_chunk, H5Dwrite_chunk};
use hdf5_metno_sys::h5f::{H5F_ACC_RDONLY, H5Fget_file_image, H5Fopen};
use hdf5_metno_sys::h5p::{H5P_DEFAULT, H5Pset_file_image};

use super::OutputError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A pseudo file name that does not exist on disk (the core driver refuses existing names).
fn pseudo_name() -> String {
    loop {
        let name = format!(
            "lclstreamer-mem-{}-{}.h5",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        if !std::path::Path::new(&name).exists() {
            return name;
        }
    }
}

/// Creates an empty in-memory file growing in steps of `increment` bytes.
pub fn create(increment: usize) -> Result<File, OutputError> {
    let fapl = hdf5::plist::FileAccess::build()
        .core_options(increment.max(64 * 1024), false)
        .finish()?;
    Ok(File::with_options()
        .set_access_plist(&fapl)?
        .create(pseudo_name())?)
}

/// Flushes `file` and returns its complete image (a valid HDF5 file).
pub fn image(file: &File) -> Result<Vec<u8>, OutputError> {
    file.flush()?;
    hdf5::sync::sync(|| {
        // SAFETY: valid file id; the buffer has the size HDF5 reported.
        let size = unsafe { H5Fget_file_image(file.id(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(OutputError::Hdf5Call("H5Fget_file_image (size)"));
        }
        let mut buf = vec![0u8; size as usize];
        let got =
            unsafe { H5Fget_file_image(file.id(), buf.as_mut_ptr() as *mut c_void, buf.len()) };
        if got != size {
            return Err(OutputError::Hdf5Call("H5Fget_file_image"));
        }
        Ok(buf)
    })
}

/// Opens an HDF5 file image read-only (HDF5 copies the bytes).
pub fn open(bytes: &[u8]) -> Result<File, OutputError> {
    if !bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        return Err(OutputError::NotHdf5);
    }
    super::filters::register_filters().map_err(OutputError::Filter)?;
    let fapl = hdf5::plist::FileAccess::build()
        .core_options(64 * 1024, false)
        .finish()?;
    let name = CString::new(pseudo_name()).unwrap();
    hdf5::sync::sync(|| {
        // SAFETY: fapl is a valid file-access list; HDF5 copies the image during H5Pset_file_image.
        unsafe {
            if H5Pset_file_image(fapl.id(), bytes.as_ptr() as *mut c_void, bytes.len()) < 0 {
                return Err(OutputError::Hdf5Call("H5Pset_file_image"));
            }
            let fid = H5Fopen(name.as_ptr(), H5F_ACC_RDONLY, fapl.id());
            if fid < 0 {
                return Err(OutputError::Hdf5Call("H5Fopen of file image"));
            }
            Ok(hdf5::from_id::<File>(fid)?)
        }
    })
}

/// Stores already-filtered bytes as the chunk at `offset` (all filters applied: mask 0).
pub fn write_chunk(ds: &Dataset, offset: &[u64], data: &[u8]) -> Result<(), OutputError> {
    hdf5::sync::sync(|| {
        // SAFETY: offset has the dataset's rank; data is a valid buffer of data.len() bytes.
        let r = unsafe {
            H5Dwrite_chunk(
                ds.id(),
                H5P_DEFAULT,
                0,
                offset.as_ptr(),
                data.len(),
                data.as_ptr() as *const c_void,
            )
        };
        if r < 0 {
            Err(OutputError::Hdf5Call("H5Dwrite_chunk"))
        } else {
            Ok(())
        }
    })
}

/// Reads the stored (filtered) bytes of the chunk at `offset` and its filter mask.
pub fn read_chunk_raw(ds: &Dataset, offset: &[u64]) -> Result<(u32, Vec<u8>), OutputError> {
    hdf5::sync::sync(|| {
        let mut size: u64 = 0;
        // SAFETY: valid ids and buffers of the sizes HDF5 reported.
        unsafe {
            let (mut mask0, mut addr) = (0u32, 0u64);
            if H5Dget_chunk_info_by_coord(
                ds.id(),
                offset.as_ptr(),
                &mut mask0,
                &mut addr,
                &mut size,
            ) < 0
            {
                return Err(OutputError::Hdf5Call("H5Dget_chunk_info_by_coord"));
            }
            let mut buf = vec![0u8; size as usize];
            let mut mask: u32 = 0;
            if H5Dread_chunk(
                ds.id(),
                H5P_DEFAULT,
                offset.as_ptr(),
                &mut mask,
                buf.as_mut_ptr() as *mut c_void,
            ) < 0
            {
                return Err(OutputError::Hdf5Call("H5Dread_chunk"));
            }
            Ok((mask, buf))
        }
    })
}
