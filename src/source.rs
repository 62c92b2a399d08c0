//! Getting input bytes off disk: whole files (memory-mapped), gzip-transparent streams, and the
//! first bytes of a file for content sniffing.
//!
//! Parsers never open files themselves; they take `&[u8]` (or a stream from [`open_stream`]),
//! so they can be tested on byte literals.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{self, Read};
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// How many leading bytes [`sniff`] returns (after decompression).
pub const SNIFF_LEN: usize = 64 * 1024;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

pub fn is_gzip(prefix: &[u8]) -> bool {
    prefix.starts_with(&GZIP_MAGIC)
}

/// A whole input in memory: mapped for plain files, decompressed for `.gz` (detected by content).
pub struct Input {
    pub path: PathBuf,
    data: Data,
}

enum Data {
    Owned(Vec<u8>),
    Mapped(Mapping),
}

impl Input {
    /// Reads or maps the whole file; gzip content is decompressed.
    pub fn open(path: impl AsRef<Path>) -> Result<Input> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = [0u8; 2];
        let n = read_up_to(&file, &mut head).map_err(|e| Error::io(path, e))?;
        if is_gzip(&head[..n]) {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(File::open(path).map_err(|e| Error::io(path, e))?)
                .read_to_end(&mut out)
                .map_err(|e| {
                    Error::input(
                        path,
                        crate::diag::Position::Whole,
                        format!("gzip stream is damaged after {} bytes: {e}", out.len()),
                    )
                })?;
            return Ok(Input {
                path: path.to_path_buf(),
                data: Data::Owned(out),
            });
        }
        let data = match Mapping::new(&file, len) {
            Some(m) => Data::Mapped(m),
            None => {
                let mut v = Vec::with_capacity(len.min(1 << 30) as usize);
                File::open(path)
                    .and_then(|mut f| f.read_to_end(&mut v))
                    .map_err(|e| Error::io(path, e))?;
                Data::Owned(v)
            }
        };
        Ok(Input {
            path: path.to_path_buf(),
            data,
        })
    }

    /// An input made from bytes already in memory (tests, stdin).
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Input {
        Input {
            path: path.into(),
            data: Data::Owned(bytes),
        }
    }
}

impl Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.data {
            Data::Owned(v) => v,
            Data::Mapped(m) => m.as_slice(),
        }
    }
}

/// A read-only private mapping of a whole file.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned; sharing `&[u8]` views across threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above, no interior mutability.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file`; `None` for empty files or when mmap is refused (pipes, /proc).
    fn new(file: &File, len: u64) -> Option<Mapping> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        // SAFETY: we ask for a fresh read-only private mapping of a file we hold open; the kernel
        // picks the address. The result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        Some(Mapping { ptr, len })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live mapping owned by self; it is unmapped only in Drop.
        // A file truncated by another process while mapped would fault (SIGBUS); leakhunt reads
        // finished dumps and reports, and bundles it writes itself.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from a successful mmap and are unmapped exactly once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// A streaming reader over the file's content, decompressing gzip transparently.
pub fn open_stream(path: impl AsRef<Path>) -> Result<Box<dyn Read + Send>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 2];
    let n = read_up_to(&file, &mut head).map_err(|e| Error::io(path, e))?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    if is_gzip(&head[..n]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(1 << 20, file),
        )))
    } else {
        Ok(Box::new(file))
    }
}

/// The first [`SNIFF_LEN`] bytes of the content (decompressed if gzip), for format detection.
pub fn sniff(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let mut out = Vec::with_capacity(SNIFF_LEN);
    let stream = open_stream(path)?;
    // A damaged gzip stream still yields what it decoded before the damage.
    let _ = stream.take(SNIFF_LEN as u64).read_to_end(&mut out);
    Ok(out)
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
pub fn read_up_to(mut src: impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_plain_and_gzip_alike() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.json");
        std::fs::write(&plain, b"{\"address\":\"0x1\"}\n").unwrap();
        let gz = dir.path().join("b");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(b"{\"address\":\"0x1\"}\n").unwrap();
        enc.finish().unwrap();
        assert_eq!(&*Input::open(&plain).unwrap(), &*Input::open(&gz).unwrap());
        assert_eq!(sniff(&gz).unwrap(), b"{\"address\":\"0x1\"}\n");
        let mut s = String::new();
        open_stream(&gz).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "{\"address\":\"0x1\"}\n");
    }

    #[test]
    fn empty_file_is_empty_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty");
        std::fs::write(&p, b"").unwrap();
        assert!(Input::open(&p).unwrap().is_empty());
    }

    #[test]
    fn missing_file_names_path() {
        let err = Input::open("/nonexistent/leakhunt/x").err().unwrap();
        assert!(err.to_string().starts_with("/nonexistent/leakhunt/x: "));
    }
}
