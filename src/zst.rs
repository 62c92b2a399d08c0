//! Zstandard files as leakhunt writes and reads them: heap dumps in bundles are cut into
//! independent frames that each end at the end of a line, so that the readers can hand frames to
//! both cores as they hand 32 MiB chunks of a plain file.
//!
//! Stage: `source` (bytes off disk) and `run` (writing the bundle). A file leakhunt writes is a
//! sequence of ordinary zstd frames (RFC 8878) followed by one skippable frame holding
//! [`LINES_MARK`]: written last, it says that every frame before it ends at a line end and that
//! the file is complete. Any other `.zst` (a user's, or one cut short) reads too, as one stream.
//!
//! Frames are found by walking their headers and block headers ([`walk`]), which needs no
//! decompression and no seek table. The codec is the C library on every platform but Apple's,
//! where a pure-Rust one is used (see Cargo.toml for why); both read and write the same format.
//!
//! # Platform specific behavior
//! Apple targets compress with ruzstd's fastest level, which is slower and compresses less than
//! the C library's level 1; what they write reads everywhere.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// `28 B5 2F FD`: a zstd frame.
pub const FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The payload of the skippable frame that closes a file of line-aligned frames.
pub const LINES_MARK: &[u8] = b"leakhunt line-aligned zstd frames 1";

/// How much content one frame holds (a line longer than this gets a frame of its own).
pub const FRAME_CONTENT: usize = 8 << 20;

/// Whether `prefix` starts a zstd file (a zstd frame or a skippable frame).
pub fn is_zstd(prefix: &[u8]) -> bool {
    prefix.starts_with(&FRAME_MAGIC) || is_skippable(prefix)
}

fn is_skippable(prefix: &[u8]) -> bool {
    prefix.len() >= 4 && prefix[0] & 0xf0 == 0x50 && prefix[1..4] == [0x2a, 0x4d, 0x18]
}

/// One data frame of a file: where its bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub offset: u64,
    pub len: u64,
}

/// The frames of a zstd file as found by [`walk`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameList {
    /// Data frames in file order (skippable frames left out).
    pub frames: Vec<Frame>,
    /// The file closes with [`LINES_MARK`]: every frame ends at a line end.
    pub line_aligned: bool,
    /// Where the walk stopped before the end of the file, and why: what follows is not read.
    pub damage: Option<(u64, String)>,
}

impl FrameList {
    /// Total compressed bytes of the data frames.
    pub fn compressed_bytes(&self) -> u64 {
        self.frames.iter().map(|f| f.len).sum()
    }
}

/// Finds every frame of the zstd file `file` (of `len` bytes) from the frame and block headers.
/// A damaged header ends the walk; the frames before it are kept.
pub fn walk(file: &File, len: u64) -> io::Result<FrameList> {
    let mut list = FrameList::default();
    let mut pos = 0u64;
    while pos < len {
        match frame_at(file, pos, len)? {
            Ok(FrameAt::Data(end)) => {
                list.frames.push(Frame {
                    offset: pos,
                    len: end - pos,
                });
                list.line_aligned = false;
                pos = end;
            }
            Ok(FrameAt::Skippable(end, marks_lines)) => {
                // The mark closes the file: frames after it would not be covered by it.
                list.line_aligned = marks_lines;
                pos = end;
            }
            Err(why) => {
                list.damage = Some((pos, why));
                list.line_aligned = false;
                break;
            }
        }
    }
    Ok(list)
}

enum FrameAt {
    /// A data frame ending at this offset.
    Data(u64),
    /// A skippable frame ending at this offset; whether it holds [`LINES_MARK`].
    Skippable(u64, bool),
}

/// Reads exactly `buf.len()` bytes at `pos`, or says the file ends first.
fn read_exact_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<bool> {
    match file.read_exact_at(buf, pos) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The frame starting at `pos`: outer error for I/O, inner error for a damaged or cut frame.
fn frame_at(file: &File, pos: u64, len: u64) -> io::Result<std::result::Result<FrameAt, String>> {
    let mut head = [0u8; 18];
    let avail = usize::try_from((len - pos).min(18)).unwrap_or(18);
    if !read_exact_at(file, &mut head[..avail], pos)? || avail < 5 {
        return Ok(Err("the file ends inside a frame header".into()));
    }
    if is_skippable(&head) {
        if avail < 8 {
            return Ok(Err("the file ends inside a frame header".into()));
        }
        let size = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        let end = pos + 8 + size;
        if end > len {
            return Ok(Err("the file ends inside a skippable frame".into()));
        }
        let marks = size == LINES_MARK.len() as u64 && {
            let mut payload = vec![0u8; LINES_MARK.len()];
            read_exact_at(file, &mut payload, pos + 8)? && payload == LINES_MARK
        };
        return Ok(Ok(FrameAt::Skippable(end, marks)));
    }
    if !head.starts_with(&FRAME_MAGIC) {
        return Ok(Err("not a zstd frame (bad magic number)".into()));
    }
    let descriptor = head[4];
    if descriptor & 0x08 != 0 {
        return Ok(Err("reserved bit set in a frame header".into()));
    }
    let fcs_flag = descriptor >> 6;
    let single_segment = descriptor & 0x20 != 0;
    let checksum = descriptor & 0x04 != 0;
    let dict_bytes = [0u64, 1, 2, 4][usize::from(descriptor & 0x03)];
    let fcs_bytes = match fcs_flag {
        0 => u64::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut at = pos + 5 + u64::from(!single_segment) + dict_bytes + fcs_bytes;
    loop {
        let mut block = [0u8; 3];
        if at + 3 > len || !read_exact_at(file, &mut block, at)? {
            return Ok(Err("the file ends inside a frame".into()));
        }
        let header = u32::from(block[0]) | u32::from(block[1]) << 8 | u32::from(block[2]) << 16;
        let last = header & 1 != 0;
        let size = u64::from(header >> 3);
        let body = match (header >> 1) & 3 {
            0 | 2 => size,
            1 => 1,
            _ => return Ok(Err("reserved block type in a frame".into())),
        };
        at += 3 + body;
        if last {
            break;
        }
    }
    if checksum {
        at += 4;
    }
    if at > len {
        return Ok(Err("the file ends inside a frame".into()));
    }
    Ok(Ok(FrameAt::Data(at)))
}

/// A reader of the content of one frame (`bytes` holds exactly that frame).
pub fn frame_decoder<'a>(bytes: &'a [u8]) -> io::Result<Box<dyn Read + Send + 'a>> {
    codec::frame_decoder(bytes)
}

/// A reader of the whole content of the zstd file `file`: its data frames one after another,
/// skippable frames stepped over. Damage ends the content with an error after what was decoded.
pub fn file_decoder(file: File) -> io::Result<Box<dyn Read + Send>> {
    let len = file.metadata()?.len();
    let list = walk(&file, len)?;
    Ok(Box::new(FramesReader {
        file,
        list,
        next: 0,
        current: None,
    }))
}

struct FramesReader {
    file: File,
    list: FrameList,
    next: usize,
    /// The decoder of the frame being read (it owns that frame's compressed bytes).
    current: Option<Box<dyn Read + Send>>,
}

impl Read for FramesReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(decoder) = &mut self.current {
                let n = decoder.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            let Some(frame) = self.list.frames.get(self.next).copied() else {
                return match &self.list.damage {
                    Some((at, why)) => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("zstd data damaged at byte offset {at}: {why}"),
                    )),
                    None => Ok(0),
                };
            };
            self.next += 1;
            let mut bytes = vec![0u8; usize::try_from(frame.len).unwrap_or(usize::MAX)];
            self.file.read_exact_at(&mut bytes, frame.offset)?;
            self.current = Some(codec::frame_decoder(io::Cursor::new(bytes))?);
        }
    }
}

/// Compresses the file at `src` into line-aligned frames at `dst` (created 0600, as every file
/// of a bundle): every
/// [`FRAME_CONTENT`] bytes or so, cut after a `\n`, then the closing [`LINES_MARK`]. Returns the
/// size written.
pub fn compress_lines(src: &Path, dst: &Path) -> Result<u64> {
    compress_lines_sized(src, dst, FRAME_CONTENT)
}

/// [`compress_lines`] with frames of about `frame_content` bytes (tests make many small ones).
pub fn compress_lines_sized(src: &Path, dst: &Path, frame_content: usize) -> Result<u64> {
    compress_lines_with(src, dst, frame_content, None)
}

/// Rewrites a piece of whole lines: appends to the `Vec` what to compress instead.
pub type Rewrite<'a> = &'a mut dyn FnMut(&[u8], &mut Vec<u8>);

/// [`compress_lines`], each piece of whole lines passed through `rewrite` (which appends what
/// to compress instead) when there is one.
pub fn compress_lines_filtered(src: &Path, dst: &Path, rewrite: Rewrite<'_>) -> Result<u64> {
    compress_lines_with(src, dst, FRAME_CONTENT, Some(rewrite))
}

fn compress_lines_with(
    src: &Path,
    dst: &Path,
    frame_content: usize,
    mut rewrite: Option<Rewrite<'_>>,
) -> Result<u64> {
    let frame_content = frame_content.max(1);
    let input = File::open(src).map_err(|e| Error::io(src, e))?;
    let mut reader = io::BufReader::with_capacity(1 << 20, input);
    let out = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dst)
            .map_err(|e| Error::io(dst, e))?
    };
    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    let mut piece: Vec<u8> = Vec::with_capacity(frame_content.min(FRAME_CONTENT) + (1 << 20));
    let mut frame = Vec::new();
    let mut rewritten = Vec::new();
    let mut compressor = codec::Compressor::new().map_err(|e| Error::io(dst, e))?;
    let mut written = 0u64;
    loop {
        // Fill the piece to its size, then on to the next line end.
        let mut ended = false;
        while piece.len() < frame_content {
            let avail = reader.fill_buf().map_err(|e| Error::io(src, e))?;
            if avail.is_empty() {
                ended = true;
                break;
            }
            let take = avail.len().min(frame_content - piece.len());
            piece.extend_from_slice(&avail[..take]);
            reader.consume(take);
        }
        if !ended && piece.last() != Some(&b'\n') {
            let n = reader
                .read_until(b'\n', &mut piece)
                .map_err(|e| Error::io(src, e))?;
            ended = n == 0;
        }
        if !piece.is_empty() {
            let content = match rewrite.as_mut() {
                Some(rewrite) => {
                    rewritten.clear();
                    rewrite(&piece, &mut rewritten);
                    &rewritten
                }
                None => &piece,
            };
            frame.clear();
            compressor
                .compress(content, &mut frame)
                .map_err(|e| Error::io(dst, e))?;
            out.write_all(&frame).map_err(|e| Error::io(dst, e))?;
            written += frame.len() as u64;
            piece.clear();
        }
        if ended {
            break;
        }
    }
    let mut mark = vec![0x50, 0x2a, 0x4d, 0x18];
    mark.extend_from_slice(&(LINES_MARK.len() as u32).to_le_bytes());
    mark.extend_from_slice(LINES_MARK);
    out.write_all(&mark).map_err(|e| Error::io(dst, e))?;
    written += mark.len() as u64;
    let out = out
        .into_inner()
        .map_err(|e| Error::io(dst, e.into_error()))?;
    out.sync_all().map_err(|e| Error::io(dst, e))?;
    Ok(written)
}

#[cfg(not(target_vendor = "apple"))]
mod codec {
    use std::io::{self, BufRead, Read};

    /// zstd's level 1: about 16x on real dumps, at several hundred MB/s.
    const LEVEL: i32 = 1;

    pub struct Compressor(zstd::bulk::Compressor<'static>);

    impl Compressor {
        pub fn new() -> io::Result<Compressor> {
            let mut c = zstd::bulk::Compressor::new(LEVEL)?;
            // A damaged frame is then told apart from a good one when it is read.
            c.include_checksum(true)?;
            c.include_contentsize(true)?;
            Ok(Compressor(c))
        }

        pub fn compress(&mut self, content: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
            out.reserve(zstd::zstd_safe::compress_bound(content.len()));
            self.0.compress_to_buffer(content, out).map(|_| ())
        }
    }

    pub fn frame_decoder<'a, R: BufRead + Send + 'a>(
        bytes: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(Box::new(
            zstd::stream::read::Decoder::with_buffer(bytes)?.single_frame(),
        ))
    }
}

#[cfg(target_vendor = "apple")]
mod codec {
    use std::io::{self, BufRead, Read};

    pub struct Compressor;

    impl Compressor {
        pub fn new() -> io::Result<Compressor> {
            Ok(Compressor)
        }

        pub fn compress(&mut self, content: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
            *out = ruzstd::encoding::compress_to_vec(
                content,
                ruzstd::encoding::CompressionLevel::Fastest,
            );
            Ok(())
        }
    }

    pub fn frame_decoder<'a, R: BufRead + Send + 'a>(
        bytes: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        let decoder = ruzstd::decoding::StreamingDecoder::new(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(Box::new(decoder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            v.extend_from_slice(
                format!("{{\"address\":\"0x{i:x}\", \"type\":\"STRING\"}}\n").as_bytes(),
            );
        }
        v
    }

    fn decode_all(path: &Path) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        file_decoder(File::open(path)?)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn compressed_lines_read_back_and_every_frame_ends_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("d.json"), dir.path().join("d.json.zst"));
        // Past two frames' worth, and a last line with no `\n`.
        let mut content = lines(500_000);
        content.extend_from_slice(b"{\"address\":\"0x1\"");
        assert!(content.len() > 2 * FRAME_CONTENT);
        std::fs::write(&src, &content).unwrap();
        let size = compress_lines(&src, &dst).unwrap();
        assert_eq!(size, std::fs::metadata(&dst).unwrap().len());
        assert!(size * 4 < content.len() as u64, "{size}");
        let file = File::open(&dst).unwrap();
        let list = walk(&file, size).unwrap();
        assert!(list.line_aligned && list.damage.is_none());
        assert_eq!(list.frames.len(), 3);
        let mut whole = Vec::new();
        for (i, f) in list.frames.iter().enumerate() {
            let mut bytes = vec![0; f.len as usize];
            file.read_exact_at(&mut bytes, f.offset).unwrap();
            let mut part = Vec::new();
            frame_decoder(&bytes)
                .unwrap()
                .read_to_end(&mut part)
                .unwrap();
            if i + 1 < list.frames.len() {
                assert_eq!(part.last(), Some(&b'\n'));
            }
            whole.extend_from_slice(&part);
        }
        assert_eq!(whole, content);
        assert_eq!(decode_all(&dst).unwrap(), content);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dst).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_file_cut_short_keeps_its_whole_frames_and_names_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("d.json"), dir.path().join("d.json.zst"));
        let content = lines(400_000);
        std::fs::write(&src, &content).unwrap();
        compress_lines(&src, &dst).unwrap();
        let file = File::open(&dst).unwrap();
        let full = walk(&file, file.metadata().unwrap().len()).unwrap();
        let cut = full.frames[1].offset + full.frames[1].len / 2;
        let bytes = std::fs::read(&dst).unwrap();
        std::fs::write(&dst, &bytes[..cut as usize]).unwrap();
        let file = File::open(&dst).unwrap();
        let list = walk(&file, cut).unwrap();
        assert_eq!(list.frames, full.frames[..1]);
        assert!(!list.line_aligned);
        let (at, why) = list.damage.clone().unwrap();
        assert_eq!(at, full.frames[1].offset);
        assert_eq!(why, "the file ends inside a frame");
        let err = decode_all(&dst).unwrap_err().to_string();
        assert!(err.contains(&format!("byte offset {at}")), "{err}");
        // Decoded before the damage: exactly the first frame's lines.
        let mut got = Vec::new();
        let _ = file_decoder(File::open(&dst).unwrap())
            .unwrap()
            .read_to_end(&mut got);
        assert!(content.starts_with(&got) && !got.is_empty() && got.ends_with(b"\n"));
    }

    /// The Apple targets' pure-Rust codec reads what the C one writes, and the other way round.
    #[cfg(not(target_vendor = "apple"))]
    #[test]
    fn both_codecs_read_each_other_s_frames() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("d.json"), dir.path().join("d.json.zst"));
        let content = lines(20_000);
        std::fs::write(&src, &content).unwrap();
        compress_lines_sized(&src, &dst, 100_000).unwrap();
        let file = File::open(&dst).unwrap();
        let list = walk(&file, file.metadata().unwrap().len()).unwrap();
        assert!(list.frames.len() > 3);
        let mut whole = Vec::new();
        for f in &list.frames {
            let mut bytes = vec![0; f.len as usize];
            file.read_exact_at(&mut bytes, f.offset).unwrap();
            ruzstd::decoding::StreamingDecoder::new(&bytes[..])
                .unwrap()
                .read_to_end(&mut whole)
                .unwrap();
        }
        assert_eq!(whole, content);

        // Frames made by ruzstd, closed by the mark, as an Apple machine writes them.
        let mut written = Vec::new();
        for piece in content.chunks(content.len() / 4 + 1) {
            written.extend(ruzstd::encoding::compress_to_vec(
                piece,
                ruzstd::encoding::CompressionLevel::Fastest,
            ));
        }
        written.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18]);
        written.extend_from_slice(&(LINES_MARK.len() as u32).to_le_bytes());
        written.extend_from_slice(LINES_MARK);
        let apple = dir.path().join("apple.json.zst");
        std::fs::write(&apple, &written).unwrap();
        let file = File::open(&apple).unwrap();
        let list = walk(&file, written.len() as u64).unwrap();
        assert_eq!(list.frames.len(), 4);
        assert!(list.line_aligned && list.damage.is_none());
        assert_eq!(decode_all(&apple).unwrap(), content);
    }

    #[test]
    fn magic_numbers() {
        assert!(is_zstd(&FRAME_MAGIC));
        assert!(is_zstd(&[0x5e, 0x2a, 0x4d, 0x18]));
        assert!(!is_zstd(b"{\"a\""));
        assert!(!is_zstd(&[0x28, 0xb5]));
    }

    #[test]
    fn garbage_is_damage_at_offset_zero() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.zst");
        std::fs::write(&p, b"\x28\xb5\x2f\xfd\x08garbage").unwrap();
        let file = File::open(&p).unwrap();
        let list = walk(&file, 12).unwrap();
        assert!(list.frames.is_empty());
        assert_eq!(list.damage.unwrap().0, 0);
    }
}
