//! The `Binary Images:` section (FORMAT.md §3.8): which image each address range belongs to,
//! used to give frames printed as a bare address their module and offset.

use super::{find, hex_prefix};
use crate::native::Frame;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryImage {
    pub start: u64,
    /// Last byte of the image (inclusive, as printed).
    pub end: u64,
    pub name: String,
    /// As printed; on macOS 11+ leaks redacts user directories (`/Users/*/…`).
    pub path: String,
}

/// `0x10005c000 -        0x10005ffff +Project (0) <UUID> /path/to/Project`
pub(super) fn image_line(line: &[u8]) -> Option<BinaryImage> {
    let (start, rest) = hex_prefix(line.trim_ascii_start())?;
    let rest = rest.trim_ascii_start().strip_prefix(b"-")?;
    let (end, rest) = hex_prefix(rest.trim_ascii_start())?;
    let rest = rest.trim_ascii_start();
    let rest = rest.strip_prefix(b"+").unwrap_or(rest);
    let uuid_open = find(rest, b" <")?;
    let uuid_close = uuid_open + find(&rest[uuid_open..], b">")?;
    let name_and_version = &rest[..uuid_open];
    let name = match name_and_version.iter().rposition(|&b| b == b'(') {
        Some(open) if open > 0 => &name_and_version[..open],
        _ => name_and_version,
    };
    let path = rest[uuid_close + 1..].trim_ascii();
    Some(BinaryImage {
        start,
        end,
        name: String::from_utf8_lossy(name.trim_ascii()).into_owned(),
        path: String::from_utf8_lossy(path).into_owned(),
    })
}

/// The images a `leaks` output lists under its last `Binary Images:` line (the libraries loaded
/// in the process when leaks looked), without reading the rest of the report: `leakhunt run`
/// uses them on macOS to name the file each FFI library was loaded from. Empty when the output
/// has no such section (`-quiet`, a failure).
pub fn binary_images(output: &[u8]) -> Vec<BinaryImage> {
    let Some(at) = memchr::memmem::rfind(output, b"Binary Images:")
        .filter(|&at| at == 0 || output[at - 1] == b'\n')
    else {
        return Vec::new();
    };
    output[at..]
        .split(|&b| b == b'\n')
        .skip(1)
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.trim_ascii().is_empty())
        .map_while(image_line)
        .collect()
}

/// Gives frames their image from the address ranges: a frame with only an address gets the
/// image's path as module; a frame whose module is the image's name gets its offset.
pub(super) fn place_frames(frames: &mut [Frame], images: &mut [BinaryImage]) {
    if images.is_empty() {
        return;
    }
    images.sort_by_key(|i| i.start);
    for frame in frames {
        let Some(address) = frame.address else {
            continue;
        };
        let after = images.partition_point(|i| i.start <= address);
        let Some(image) = after.checked_sub(1).and_then(|i| images.get(i)) else {
            continue;
        };
        if address > image.end {
            continue;
        }
        match &frame.module {
            None => {
                let module = if image.path.is_empty() {
                    &image.name
                } else {
                    &image.path
                };
                frame.module = Some(module.clone());
                frame.module_offset = Some(address - image.start);
            }
            Some(m) if *m == image.name && frame.module_offset.is_none() => {
                frame.module_offset = Some(address - image.start);
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_place_bare_addresses() {
        let mut images = vec![
            image_line(b"       0x18073f000 -        0x18077fff7  libsystem_malloc.dylib (646.0.13) <ED8C6BDE-145D-3B94-8C86-4E5E5FD021D1> /usr/lib/system/libsystem_malloc.dylib").unwrap(),
            image_line(b"       0x10005c000 -        0x10005ffff +Project (0) <25FB8560-3848-3B7C-8A5E-BC7655801F52> /Users/*/Library/Mobile Documents/com~apple~CloudDocs/*/Project").unwrap(),
            image_line(b"       0x1a7fc4000 -        0x1a7fd0ffb  com.apple.MallocStackLogging (1.0 - 64566.105.1) <EFD1EA4B-D86E-3704-A075-C0465194B4DA> /System/Library/PrivateFrameworks/MallocStackLogging.framework/Versions/A/MallocStackLogging").unwrap(),
        ];
        assert_eq!(images[1].name, "Project");
        assert_eq!(images[2].name, "com.apple.MallocStackLogging");
        let mut frames = vec![
            Frame {
                address: Some(0x18076e894),
                ..Frame::default()
            },
            Frame {
                address: Some(0x10005f7a4),
                module: Some("Project".into()),
                function: Some("InitLinkedList".into()),
                ..Frame::default()
            },
            Frame {
                address: Some(0x1),
                ..Frame::default()
            },
        ];
        place_frames(&mut frames, &mut images);
        assert_eq!(
            frames[0].module.as_deref(),
            Some("/usr/lib/system/libsystem_malloc.dylib")
        );
        assert_eq!(frames[0].module_offset, Some(0x2f894));
        assert_eq!(frames[1].module.as_deref(), Some("Project"));
        assert_eq!(frames[1].module_offset, Some(0x37a4));
        assert_eq!(frames[2].module, None);
        assert_eq!(image_line(b"0x1 - zz"), None);
    }

    #[test]
    fn the_image_list_is_read_from_the_end_of_a_report() {
        let report = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/leaks/macos15.0-v3.0-list-msl-lite-callstack.txt"
        ))
        .unwrap();
        let images = binary_images(&report);
        assert!(images.len() > 3, "{images:#?}");
        assert_eq!(images[0].name, "Project");
        assert!(
            images
                .iter()
                .any(|i| i.path == "/usr/lib/system/libsystem_malloc.dylib"),
            "{images:#?}"
        );
        // Lines after the list that are not images end it; no section, no images.
        let text = b"Binary Images:\r\n       0x1000 -        0x1fff +libzmq.5.dylib (0) <25FB8560-3848-3B7C-8A5E-BC7655801F52> /opt/homebrew/lib/libzmq.5.dylib\r\n\r\nsomething else\n       0x2000 -        0x2fff +x (0) <25FB8560-3848-3B7C-8A5E-BC7655801F52> /x\n";
        let mut with_newline = b"x\n".to_vec();
        with_newline.extend_from_slice(text);
        let images = binary_images(&with_newline);
        assert_eq!(images.len(), 1, "{images:#?}");
        assert_eq!(images[0].path, "/opt/homebrew/lib/libzmq.5.dylib");
        assert!(binary_images(b"Process 1: 0 leaks for 0 total leaked bytes.\n").is_empty());
    }
}
