//! `leakhunt analyze` and the report at the end of `leakhunt run`, end to end: real programs
//! under real backends, and the offline seed evidence.

use crate::common::run_leakhunt;
use std::path::Path;

/// A bundle with a manifest only: the program crashed before the first snapshot.
fn crashed_bundle(dir: &Path) {
    std::fs::write(
        dir.join("manifest.json"),
        br#"{"leakhunt_bundle": 1, "command": ["leak.rb"], "backend": {"name": "lsan"},
            "outcome": {"kind": "signaled", "signal": 11, "signal_name": "SIGSEGV",
                        "detail": "killed by SIGSEGV before the first snapshot"},
            "warnings": ["the program ended before the first snapshot: try --after 0.2s"]}"#,
    )
    .unwrap();
}

#[test]
fn a_crashed_run_is_reported_with_its_signal_and_no_verdict() {
    let dir = tempfile::tempdir().unwrap();
    crashed_bundle(dir.path());
    let (code, stdout, stderr) = run_leakhunt(["analyze".as_ref(), dir.path().as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.lines().next().unwrap(),
        "leakhunt: INCONCLUSIVE — not enough evidence to tell · 0 heap + 0 native snapshots · backend lsan · program killed by SIGSEGV"
    );
    assert!(stdout.contains("the program ended before the first snapshot: try --after 0.2s"));

    let (code, stdout, _) = run_leakhunt([
        "analyze".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["verdict"], "inconclusive");
    assert_eq!(v["program"]["outcome"]["signal_name"], "SIGSEGV");
    assert_eq!(v["findings"], serde_json::json!([]));
}

#[test]
fn analyze_writes_html_to_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    crashed_bundle(dir.path());
    let out = dir.path().join("report.html");
    let (code, stdout, stderr) = run_leakhunt([
        "analyze".as_ref(),
        "--format".as_ref(),
        "html".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        dir.path().as_os_str(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty());
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("program killed by SIGSEGV"));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn bad_inputs_are_usage_or_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let (code, _, stderr) = run_leakhunt(["analyze".as_ref(), missing.as_os_str()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nope.json"), "{stderr}");
    let (code, _, stderr) = run_leakhunt(["analyze".as_ref(), dir.path().as_os_str()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a leakhunt bundle"), "{stderr}");
    let (code, _, _) = run_leakhunt(["analyze"]);
    assert_eq!(code, 2);
}
