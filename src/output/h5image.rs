//! In-memory HDF5 files (core driver, no backing store): write one into memory we own and take
//! its bytes, reopen from bytes, and raw chunk access (`H5Dwrite_chunk` / `H5Dread_chunk`).

use std::ffi::{CString, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

use hdf5::{Dataset, File};
use hdf5_metno_sys::h5d::{H5Dget_chunk_info_by_coord, H5Dread_chunk, H5Dwrite_chunk};
use hdf5_metno_sys::h5f::{H5F_ACC_EXCL, H5F_ACC_RDONLY, H5Fcreate, H5Fopen};
use hdf5_metno_sys::h5fd::{H5FD_file_image_callbacks_t, H5FD_file_image_op_t};
use hdf5_metno_sys::h5p::{H5P_DEFAULT, H5Pset_file_image, H5Pset_file_image_callbacks};

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

/// An HDF5 file being written in memory (core driver, no backing store) whose memory we own:
/// the driver allocates, grows and frees it through file image callbacks, so [`MemFile::finish`]
/// hands over the finished image without copying it.
pub struct MemFile {
    file: Option<File>,
    mem: Box<ImageMem>,
}

/// The core driver's memory. Bytes below `size` (the size the driver last asked for) have all
/// been written or zeroed by the driver.
struct ImageMem {
    ptr: *mut u8,
    cap: usize,
    size: usize,
    closed: bool,
}

impl ImageMem {
    /// Makes room for `size` bytes (never shrinks), keeping the contents.
    fn reserve(&mut self, size: usize) -> bool {
        if size <= self.cap && !self.ptr.is_null() {
            return true;
        }
        let cap = size.max(self.cap + self.cap / 2).max(4096);
        let Ok(layout) = std::alloc::Layout::array::<u8>(cap) else {
            return false;
        };
        // SAFETY: `cap > 0`; an existing block was allocated with `Layout::array::<u8>(self.cap)`.
        let ptr = unsafe {
            if self.ptr.is_null() {
                std::alloc::alloc(layout)
            } else {
                std::alloc::realloc(
                    self.ptr,
                    std::alloc::Layout::array::<u8>(self.cap).unwrap(),
                    cap,
                )
            }
        };
        if ptr.is_null() {
            return false;
        }
        crate::huge_pages::advise(ptr, cap);
        self.ptr = ptr;
        self.cap = cap;
        true
    }
}

fn mem_of<'a>(udata: *mut c_void) -> &'a mut ImageMem {
    // SAFETY: udata is the `ImageMem` boxed in the `MemFile` that outlives the HDF5 file; HDF5
    // calls back on the thread holding the HDF5 lock, one call at a time.
    unsafe { &mut *(udata as *mut ImageMem) }
}

extern "C" fn image_realloc(
    ptr: *mut c_void,
    size: usize,
    _op: H5FD_file_image_op_t,
    udata: *mut c_void,
) -> *mut c_void {
    let m = mem_of(udata);
    if (!ptr.is_null() && ptr as *mut u8 != m.ptr) || m.closed || !m.reserve(size) {
        return std::ptr::null_mut();
    }
    m.size = size;
    m.ptr as *mut c_void
}

extern "C" fn image_malloc(
    size: usize,
    op: H5FD_file_image_op_t,
    udata: *mut c_void,
) -> *mut c_void {
    image_realloc(std::ptr::null_mut(), size, op, udata)
}

extern "C" fn image_free(ptr: *mut c_void, _op: H5FD_file_image_op_t, udata: *mut c_void) -> i32 {
    let m = mem_of(udata);
    if ptr as *mut u8 != m.ptr {
        return -1;
    }
    m.closed = true;
    0
}

unsafe extern "C" fn udata_copy(udata: *mut c_void) -> *mut c_void {
    udata
}

unsafe extern "C" fn udata_free(_: *mut c_void) -> i32 {
    0
}

impl MemFile {
    /// Creates an empty in-memory file; `capacity` bytes are reserved up front (it grows past
    /// that if needed), the driver zeroes and extends its size in steps of `increment` bytes.
    pub fn create(capacity: usize, increment: usize) -> Result<Self, OutputError> {
        let mut mem = Box::new(ImageMem {
            ptr: std::ptr::null_mut(),
            cap: 0,
            size: 0,
            closed: false,
        });
        if !mem.reserve(capacity) {
            return Err(OutputError::Hdf5Call("allocating the file image"));
        }
        let fapl = hdf5::plist::FileAccess::build()
            .core_options(increment.max(64 * 1024), false)
            .finish()?;
        let callbacks = H5FD_file_image_callbacks_t {
            image_malloc: Some(image_malloc),
            image_memcpy: None,
            image_realloc: Some(image_realloc),
            image_free: Some(image_free),
            udata_copy: Some(udata_copy),
            udata_free: Some(udata_free),
            udata: &mut *mem as *mut ImageMem as *mut c_void,
        };
        let name = CString::new(pseudo_name()).unwrap();
        // The file is created from this fapl directly: hdf5's FileBuilder would rebuild the
        // list from the properties it knows and drop the callbacks.
        let file = hdf5::sync::sync(|| {
            // SAFETY: valid fapl; HDF5 copies the struct; udata outlives the file (see Drop).
            unsafe {
                if H5Pset_file_image_callbacks(fapl.id(), &callbacks as *const _ as *mut _) < 0 {
                    return Err(OutputError::Hdf5Call("H5Pset_file_image_callbacks"));
                }
                let fid = H5Fcreate(name.as_ptr(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.id());
                if fid < 0 {
                    return Err(OutputError::Hdf5Call("H5Fcreate of an in-memory file"));
                }
                Ok(hdf5::from_id::<File>(fid)?)
            }
        })?;
        Ok(MemFile {
            file: Some(file),
            mem,
        })
    }

    /// The open file.
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("open until finish")
    }

    /// Closes the file and returns its complete image (a valid HDF5 file, as it would be on
    /// disk). Every object opened in the file must have been dropped.
    pub fn finish(mut self) -> Result<Vec<u8>, OutputError> {
        self.file.take().expect("open until finish").close()?;
        let m = &mut *self.mem;
        if !m.closed {
            return Err(OutputError::Hdf5Call(
                "H5Fclose (objects of the in-memory file are still open)",
            ));
        }
        // SAFETY: the driver initialised the first `m.size` bytes and has let go of the memory.
        let bytes = unsafe { std::slice::from_raw_parts(m.ptr, m.size) };
        let len = superblock_eof(bytes)?;
        // SAFETY: allocated by the global allocator as `Layout::array::<u8>(m.cap)`, with
        // `len <= m.size <= m.cap` initialised bytes; ownership moves to the Vec.
        let v = unsafe { Vec::from_raw_parts(m.ptr, len, m.cap) };
        m.ptr = std::ptr::null_mut();
        Ok(v)
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        drop(self.file.take());
        let m = &mut *self.mem;
        // Memory still held by an HDF5 file that failed to close is leaked, not freed under it.
        if !m.ptr.is_null() && (m.closed || m.size == 0) {
            // SAFETY: allocated with this layout; HDF5 no longer uses it.
            unsafe { std::alloc::dealloc(m.ptr, std::alloc::Layout::array::<u8>(m.cap).unwrap()) };
        }
    }
}

/// The file size recorded in an HDF5 superblock (versions 0-3, 8-byte addresses, base 0):
/// its end-of-file address, which the library writes when it closes the file.
fn superblock_eof(image: &[u8]) -> Result<usize, OutputError> {
    let bad = |m: &str| Err(OutputError::Malformed(format!("closed file image: {m}")));
    if !image.starts_with(b"\x89HDF\r\n\x1a\n") {
        return bad("no HDF5 signature at offset 0");
    }
    let addr = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(image.get(at..at + 8)?.try_into().ok()?))
    };
    let (offsets_size, base_at, eof_at) = match image.get(8) {
        Some(0) => (image.get(13), 24, 40),
        Some(1) => (image.get(13), 28, 44),
        Some(2 | 3) => (image.get(9), 12, 28),
        _ => return bad("unknown superblock version"),
    };
    if offsets_size != Some(&8) {
        return bad("file addresses are not 8 bytes");
    }
    match (addr(base_at), addr(eof_at)) {
        (Some(0), Some(eof)) if eof as usize <= image.len() && eof >= 48 => Ok(eof as usize),
        _ => bad("end-of-file address outside the image"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_image_reopens_with_the_data_and_ends_at_the_superblock_eof() {
        // A small reservation, so the image has to grow through the realloc callback.
        let image = MemFile::create(0, 64 * 1024).unwrap();
        let data: Vec<u32> = (0..300_000).collect();
        image
            .file()
            .new_dataset_builder()
            .with_data(&ndarray::Array1::from(data.clone()))
            .create("x")
            .unwrap();
        let bytes = image.finish().unwrap();
        assert!(bytes.len() > 1_200_000, "{}", bytes.len());
        assert_eq!(superblock_eof(&bytes).unwrap(), bytes.len());
        let file = open(&bytes).unwrap();
        assert_eq!(file.dataset("x").unwrap().read_raw::<u32>().unwrap(), data);
    }

    #[test]
    fn dropping_an_unfinished_image_closes_it() {
        for _ in 0..3 {
            let image = MemFile::create(1 << 20, 1 << 20).unwrap();
            image.file().create_group("g").unwrap();
            drop(image);
        }
    }

    #[test]
    fn superblock_eof_reads_versions_0_and_2_and_rejects_bad_images() {
        let mut v0 = vec![0u8; 96];
        v0[..8].copy_from_slice(b"\x89HDF\r\n\x1a\n");
        v0[13] = 8;
        v0[40..48].copy_from_slice(&96u64.to_le_bytes());
        assert_eq!(superblock_eof(&v0).unwrap(), 96);
        let mut v2 = vec![0u8; 80];
        v2[..8].copy_from_slice(b"\x89HDF\r\n\x1a\n");
        v2[8] = 2;
        v2[9] = 8;
        v2[28..36].copy_from_slice(&64u64.to_le_bytes());
        assert_eq!(superblock_eof(&v2).unwrap(), 64);
        let mut past_end = v0.clone();
        past_end[40..48].copy_from_slice(&97u64.to_le_bytes());
        assert!(superblock_eof(&past_end).is_err());
        let mut based = v0.clone();
        based[24] = 1;
        assert!(superblock_eof(&based).is_err());
        assert!(superblock_eof(b"not an HDF5 file").is_err());
        assert!(superblock_eof(&v0[..20]).is_err());
    }
}
