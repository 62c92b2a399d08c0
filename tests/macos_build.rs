//! The macOS binary that `macos/build-universal.sh` links on Linux: one universal (fat) Mach-O
//! with an x86_64 and an arm64 executable, each importing from libSystem the functions
//! leakhunt's macOS code calls, the arm64 one signed (Apple silicon runs no unsigned code).
//! Read with the `object` crate.
//!
//! CI builds it before the tests and sets `LEAKHUNT_MACOS_BINARY`, which makes it required.
//! Elsewhere the test looks at `target/macos/leakhunt` and says "not built" when it is absent.

use object::read::macho::{FatArch, MachOFatFile32};
use object::{Architecture, NameOrOrdinal, Object};
use std::path::PathBuf;

/// What `src/platform/macos.rs` calls (libproc and sysctl live in libSystem), and what the
/// rest of the code needs from it on every Unix.
const MACOS_IMPORTS: [&str; 5] = [
    "_proc_pid_rusage",
    "_proc_pidpath",
    "_sysctlbyname",
    "_waitid",
    "_getsid",
];

fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LEAKHUNT_MACOS_BINARY") {
        return Some(PathBuf::from(path));
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/macos/leakhunt");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipping: {} not built (macos/build-universal.sh builds it; CI does)",
            path.display()
        );
        None
    }
}

#[test]
fn the_universal_binary_has_both_architectures_and_imports_from_libsystem() {
    let Some(path) = binary() else {
        return;
    };
    let data = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (LEAKHUNT_MACOS_BINARY names it)", path.display()));
    let fat = MachOFatFile32::parse(&*data).expect("a universal (fat) Mach-O");
    let mut architectures = Vec::new();
    for arch in fat.arches() {
        let slice = arch.data(&*data).unwrap();
        let file = object::File::parse(slice).unwrap();
        assert_eq!(file.format(), object::BinaryFormat::MachO);
        assert_eq!(file.kind(), object::ObjectKind::Executable);
        assert_eq!(file.architecture(), arch.architecture());
        architectures.push(file.architecture());

        // (library, symbol) of every import by name.
        let imports: Vec<(String, String)> = file
            .imports()
            .unwrap()
            .map(|i| i.unwrap())
            .filter_map(|i| match i.name() {
                NameOrOrdinal::Name(name) => Some((
                    String::from_utf8_lossy(i.library()).into_owned(),
                    String::from_utf8_lossy(name).into_owned(),
                )),
                NameOrOrdinal::Ordinal(_) => None,
            })
            .collect();
        for wanted in MACOS_IMPORTS {
            let (library, _) = imports
                .iter()
                .find(|(_, name)| name == wanted)
                .unwrap_or_else(|| panic!("{wanted} is not imported by {:?}", file.architecture()));
            assert_eq!(
                library,
                "/usr/lib/libSystem.B.dylib",
                "{wanted} on {:?}",
                file.architecture()
            );
        }
        // Nothing beyond what every Mac has (an empty name: a symbol bound by flat lookup).
        for (library, name) in &imports {
            assert!(
                library.starts_with("/usr/lib/") || library.starts_with("/System/Library/"),
                "{:?} imports {name} from {library:?}",
                file.architecture()
            );
        }
        assert!(file.section_by_name("__text").is_some());
        if file.architecture() == Architecture::Aarch64 {
            assert!(
                has_code_signature(slice),
                "the arm64 executable is not signed: macOS on Apple silicon refuses to run it"
            );
        }
    }
    architectures.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(
        architectures,
        [Architecture::Aarch64, Architecture::X86_64],
        "{}",
        path.display()
    );
}

/// Whether a 64-bit little-endian Mach-O has an LC_CODE_SIGNATURE load command.
fn has_code_signature(macho: &[u8]) -> bool {
    use object::macho::{LC_CODE_SIGNATURE, MachHeader64};
    use object::read::macho::MachHeader;
    let Ok(header) = MachHeader64::<object::Endianness>::parse(macho, 0) else {
        return false;
    };
    let Ok(endian) = header.endian() else {
        return false;
    };
    let Ok(mut commands) = header.load_commands(endian, macho, 0) else {
        return false;
    };
    while let Ok(Some(command)) = commands.next() {
        if command.cmd() == LC_CODE_SIGNATURE {
            return true;
        }
    }
    false
}
