//! Getting input bytes off disk: whole files (memory-mapped), streams that decompress gzip and
//! zstd transparently, and the first bytes of a file for content sniffing.
//!
//! Parsers never open files themselves; they take `&[u8]` (or a stream from [`open_stream`]),
//! so they can be tested on byte literals.

use crate::diag::Position;
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
    /// Reads or maps the whole file; gzip and zstd content is decompressed.
    pub fn open(path: impl AsRef<Path>) -> Result<Input> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = [0u8; 4];
        let n = read_up_to(&file, &mut head).map_err(|e| Error::io(path, e))?;
        if is_gzip(&head[..n]) || crate::zst::is_zstd(&head[..n]) {
            return Ok(Input {
                path: path.to_path_buf(),
                data: Data::Owned(inflate(path, MAX_INFLATED)?),
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

/// The most a gzip input may inflate to in memory. A plain file is mapped, so its size costs no
/// heap; compressed content is inflated whole for the parsers, and without a cap a small file
/// could ask for any amount (gzip inflates up to about 1,000 times: 10 MB can become 10 GB).
/// With the parsers' own records on top, 64 MiB keeps a run well under 256 MB of resident
/// memory.
pub const MAX_INFLATED: u64 = 64 << 20;

/// The whole decompressed content of the gzip or zstd file at `path`, refused past `limit`
/// bytes with an error that names the file, the limit and what to do instead.
pub fn inflate(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let (stream, format) = open_decoded(path)?;
    let mut out = Vec::new();
    stream
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| {
            Error::input(
                path,
                Position::Whole,
                format!("{format} stream is damaged after {} bytes: {e}", out.len()),
            )
        })?;
    if out.len() as u64 > limit {
        return Err(Error::input(
            path,
            Position::Whole,
            format!(
                "decompresses to more than {}, the most leakhunt inflates in memory; \
                 decompress it ({}) and give the plain file, which is read without that limit",
                size_label(limit),
                if format == "gzip" {
                    "gunzip -k"
                } else {
                    "zstd -d"
                }
            ),
        ));
    }
    Ok(out)
}

fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
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

/// A streaming reader over the file's content, decompressing gzip and zstd transparently.
pub fn open_stream(path: impl AsRef<Path>) -> Result<Box<dyn Read + Send>> {
    open_decoded(path.as_ref()).map(|(stream, _)| stream)
}

/// The file's content as a stream, and the name of the compression it was read through
/// ("gzip", "zstd", or "plain").
fn open_decoded(path: &Path) -> Result<(Box<dyn Read + Send>, &'static str)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 4];
    let n = read_up_to(&file, &mut head).map_err(|e| Error::io(path, e))?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    if is_gzip(&head[..n]) {
        Ok((
            Box::new(flate2::read::MultiGzDecoder::new(
                io::BufReader::with_capacity(1 << 20, file),
            )),
            "gzip",
        ))
    } else if crate::zst::is_zstd(&head[..n]) {
        let stream = crate::zst::file_decoder(file).map_err(|e| Error::io(path, e))?;
        Ok((stream, "zstd"))
    } else {
        Ok((Box::new(file), "plain"))
    }
}

/// The first [`SNIFF_LEN`] bytes of the content (decompressed if gzip or zstd), for format
/// detection.
pub fn sniff(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let mut out = Vec::with_capacity(SNIFF_LEN);
    let stream = open_stream(path)?;
    // A damaged stream still yields what it decoded before the damage.
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

    fn gzip_file(path: &Path, content: &[u8]) {
        let mut enc =
            flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
        enc.write_all(content).unwrap();
        enc.finish().unwrap();
    }

    #[test]
    fn inflating_stops_at_the_limit_with_an_error_naming_file_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("report.gz");
        gzip_file(&gz, &[b'x'; 1001]);
        assert_eq!(inflate(&gz, 1001).unwrap().len(), 1001);
        let err = inflate(&gz, 1000).err().unwrap().to_string();
        assert_eq!(
            err,
            format!(
                "{}: decompresses to more than 1000 bytes, the most leakhunt inflates in memory; \
                 decompress it (gunzip -k) and give the plain file, which is read without that limit",
                gz.display()
            )
        );
        assert!(inflate(&gz, 2 << 20).is_ok());
        assert_eq!(size_label(MAX_INFLATED), "64 MiB");
    }

    #[test]
    fn zstd_reads_like_plain() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.json");
        std::fs::write(&plain, b"{\"address\":\"0x1\"}\n{\"address\":\"0x2\"}\n").unwrap();
        let zst = dir.path().join("a.json.zst");
        crate::zst::compress_lines(&plain, &zst).unwrap();
        assert_eq!(&*Input::open(&plain).unwrap(), &*Input::open(&zst).unwrap());
        assert_eq!(sniff(&zst).unwrap(), std::fs::read(&plain).unwrap());
        let err = inflate(&zst, 10).err().unwrap().to_string();
        assert!(err.contains("decompress it (zstd -d)"), "{err}");
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
