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
    let (code, _, stderr) = run_leakhunt(["retainers", "x.json"]);
    assert_eq!(code, 2, "{stderr}");
}
