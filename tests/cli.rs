//! The command line as a whole: usage errors and exit codes.

use crate::common::run_leakhunt;

#[test]
fn unknown_file_kind_is_an_input_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("picture.json");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let (code, stdout, stderr) = run_leakhunt(["histo".as_ref(), png.as_os_str()]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("picture.json"), "{stderr}");
    assert!(stderr.contains("PNG"), "{stderr}");
}

#[test]
fn missing_arguments_are_usage_errors() {
    // A dump that exists, so that only the missing option can make this a usage error (a
    // missing file exits 2 as well).
    let dump = crate::common::fixture("cruby/ruby3.1.2-linux-full-traced.json.gz");
    assert!(dump.is_file());
    let (code, stdout, stderr) = run_leakhunt(["retainers".as_ref(), dump.as_os_str()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("required arguments were not provided")
            && stderr.contains("--class <CLASS>|--address <ADDRESS>"),
        "{stderr}"
    );
    let (code, _, stderr) = run_leakhunt(["histo"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("<DUMP>"), "{stderr}");
}
