//! The seed's programs on a second Ruby: Debian trixie's Ruby 3.3 in a root that `.ci/ruby-root`
//! builds (this machine's Ruby is 3.1). The agent takes other paths from 3.2 on (instruction
//! sequences, shapes in the dumps), and the runtime makes other objects while loading code.
//!
//! Each run happens in a private mount namespace: /proc, /dev, the built binary, the fixtures
//! and the test's scratch directory are mounted into the root there, and vanish with it.

use super::{Run, assert_seed_run, finish, scratch, seed_plan};
use crate::common::{
    assert_seed_a_top_finding, findings_brief, fixture, leak_kinds, locations, require,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ROOT_VERSION: &str = "3.3";

/// The root, when `.ci/ruby-root` has finished building it (`LEAKHUNT_RUBY_ROOT` overrides).
fn ruby_root() -> Option<PathBuf> {
    let root = std::env::var_os("LEAKHUNT_RUBY_ROOT").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ruby-roots/trixie"),
        PathBuf::from,
    );
    let root_user = unsafe { libc::geteuid() } == 0;
    let ready = root.join(".ready").exists() && root_user;
    require(
        "a Debian trixie root with Ruby 3.3 (.ci/ruby-root builds it; running it needs root)",
        ready,
    )
    .then_some(root)
}

/// Mounts what the run needs into `$root`, runs `$prepare` there (a shell command: building a
/// test C extension with the root's Ruby), then runs leakhunt there, in /out (a working
/// directory outside the root would not exist for the program: puma 6 stats $PWD); the rest of
/// the arguments are leakhunt's.
const IN_ROOT: &str = r#"
root=$1 bin=$2 fixtures=$3 scratch=$4 prepare=$5; shift 5
mkdir -p "$root/opt/leakhunt/bin" "$root/opt/leakhunt/fixtures" "$root/out"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --bind "$bin" "$root/opt/leakhunt/bin"
mount --bind "$fixtures" "$root/opt/leakhunt/fixtures"
mount --bind "$scratch" "$root/out"
[ -z "$prepare" ] || chroot "$root" /bin/sh -euc "$prepare" >&2
exec chroot "$root" /usr/bin/env --chdir=/out PWD=/out TMPDIR=/out/tmp /opt/leakhunt/bin/leakhunt "$@"
"#;

/// `leakhunt run OPTIONS -- PROGRAM ARGS` inside the root, PROGRAM being a path there (the
/// fixtures are at /opt/leakhunt/fixtures, the scratch directory at /out); `prepare` gets the
/// scratch directory first, and `in_root` (a shell command, may be empty) runs in the root
/// before leakhunt. Returns the run and its JSON report.
pub(super) fn run_in_root(
    options: &[&str],
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    prepare: impl FnOnce(&Path),
    in_root: &str,
) -> Option<(Run, serde_json::Value)> {
    let root = ruby_root()?;
    let _one = super::one_run_at_a_time();
    let (scratch, tmpdir, bundle) = scratch();
    prepare(scratch.path());
    let out = root_command(&root, scratch.path(), in_root, options, program, args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("spawn unshare (util-linux)");
    let report_path = scratch.path().join("report.json");
    let r = finish(scratch, tmpdir, bundle, out);
    let report = super::json_report(&report_path, &r);
    let ruby = &r.last_sidecar().ruby.version;
    assert!(ruby.starts_with(ROOT_VERSION), "the root runs Ruby {ruby}");
    Some((r, report))
}

/// `leakhunt run -o /out/bundle --format json --report /out/report.json OPTIONS -- PROGRAM ARGS`
/// in `root`, with `scratch` mounted at /out, after the shell command `prepare` (may be empty)
/// ran there.
fn root_command(
    root: &Path,
    scratch: &Path,
    prepare: &str,
    options: &[&str],
    program: &str,
    args: &[&str],
) -> Command {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_leakhunt"));
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "--",
            "sh",
            "-euc",
            IN_ROOT,
            "sh",
        ])
        .arg(root)
        .arg(bin.parent().unwrap())
        .arg(fixture(""))
        .arg(scratch)
        .arg(prepare)
        .args([
            "run",
            "-o",
            "/out/bundle",
            "--format",
            "json",
            "--report",
            "/out/report.json",
        ])
        .args(options)
        .arg("--")
        .arg(program)
        .args(args)
        .env("LEAKHUNT_NO_PROGRESS", "1");
    command
}

/// A seed variant inside the root, with the same plan as on this machine's Ruby (`after`
/// overrides the warm-up).
fn seed_run_in_root(
    variant: &str,
    backend: &str,
    after: Option<&str>,
) -> Option<(Run, serde_json::Value)> {
    let (iterations, options) = seed_plan(backend, after);
    run_in_root(
        &options,
        &format!("/opt/leakhunt/fixtures/seed/{variant}"),
        &["ipc:///out/zmq.sock", "1024", iterations],
        &[],
        |_| {},
        "",
    )
}

/// The top leak finding, with the run's story when it is not there.
fn top(r: &Run, report: &serde_json::Value) -> serde_json::Value {
    let f = &report["findings"][0];
    assert!(f.is_object(), "no finding\n{report:#}\n{}", r.context());
    f.clone()
}

#[test]
fn ruby_3_3_seed_array_is_retention_by_the_array() {
    let Some((r, report)) = seed_run_in_root("leak.rb", "lsan", None) else {
        return;
    };
    assert_seed_run(&r, "leak.rb");
    let top = top(&r, &report);
    assert_eq!(
        leak_kinds(&report),
        ["ruby_retention"],
        "{}\n{report:#}\n{}",
        findings_brief(&report),
        r.context()
    );
    assert_seed_a_top_finding(&top);
}

#[test]
fn ruby_3_3_seed_counter_is_the_missing_message_close() {
    let Some((r, report)) = seed_run_in_root("leak-counter.rb", "lsan", None) else {
        return;
    };
    assert_seed_run(&r, "leak-counter.rb");
    let top = top(&r, &report);
    assert_eq!(
        leak_kinds(&report),
        ["missing_release"],
        "{}\n{report:#}\n{}",
        findings_brief(&report),
        r.context()
    );
    assert_eq!(top["suggestion"]["method"], "ZMQ::Message#close");
    assert_eq!(
        locations(&top)[0],
        ("leak-counter.rb".into(), 37, "created".into())
    );
    let library = top["native"]["library"].as_str().unwrap_or_default();
    assert!(library.starts_with("libzmq.so"), "{top:#}");
}

/// The fixed seed on Ruby 3.3 under lsan: every received message is closed, every reply sent:
/// no leak finding.
#[test]
fn ruby_3_3_seed_fixed_is_clean_under_lsan() {
    let Some((r, report)) = seed_run_in_root("leak-fixed.rb", "lsan", None) else {
        return;
    };
    assert_seed_run(&r, "leak-fixed.rb");
    assert!(
        leak_kinds(&report).is_empty(),
        "{}\n{report:#}\n{}",
        findings_brief(&report),
        r.context()
    );
    assert_eq!(report["verdict"], "no_leak", "{report:#}");
}

/// Under valgrind a first snapshot 1 s in comes while ffi-rzmq is still being required: what
/// loading allocates must not read as a leak of the fixed program.
#[test]
fn ruby_3_3_seed_fixed_is_clean_under_valgrind_even_while_loading() {
    let Some((r, report)) = seed_run_in_root("leak-fixed.rb", "valgrind", Some("1s")) else {
        return;
    };
    assert_seed_run(&r, "leak-fixed.rb");
    assert!(
        leak_kinds(&report).is_empty(),
        "{report:#}\n{}",
        r.context()
    );
    assert_eq!(report["verdict"], "no_leak");
}

/// The widget library (built here, bound through FFI in the root): unclosed widgets are a
/// missing `Widget#close`; gadgets freed by an `FFI::AutoPointer` finalizer are no finding.
#[test]
fn ruby_3_3_unclosed_widgets_are_blamed_and_finalized_gadgets_are_not() {
    let options = [
        "--backend",
        "lsan",
        "--snapshots",
        "2",
        "--after",
        "0.5s",
        "--every",
        "1s",
        "--fail-on",
        "never",
    ];
    for (program, leaks) in [("widget-leak.rb", true), ("gadget-finalized.rb", false)] {
        let Some((r, report)) = run_in_root(
            &options,
            &format!("/opt/leakhunt/fixtures/widget/{program}"),
            &["3000", "3"],
            &[("WIDGET_LIB", "/out/libwidget.so")],
            |scratch| {
                crate::common::build_widget(scratch);
            },
            "",
        ) else {
            return;
        };
        if leaks {
            let top = top(&r, &report);
            assert_eq!(
                leak_kinds(&report),
                ["missing_release"],
                "{}\n{report:#}",
                findings_brief(&report)
            );
            assert_eq!(top["kind"], "missing_release", "{top:#}");
            assert_eq!(top["suggestion"]["method"], "Widget#close");
            assert_eq!(top["native"]["function"], "widget_create");
        } else {
            assert!(leak_kinds(&report).is_empty(), "{program}: {report:#}");
            assert_eq!(report["verdict"], "no_leak", "{program}");
        }
    }
}

/// Debian trixie's puma 6 in cluster mode on Ruby 3.3: both workers are examined and each
/// leaks Widgets created at app.rb.
#[test]
fn ruby_3_3_puma_cluster_leaks_in_every_worker() {
    let Some(root) = ruby_root() else {
        return;
    };
    let _one = super::one_run_at_a_time();
    let (scratch, tmpdir, bundle) = scratch();
    crate::common::build_widget(scratch.path());
    let socket = scratch.path().join("server.sock");
    let mut command = root_command(
        &root,
        scratch.path(),
        "",
        &["--backend", "lsan", "--snapshots", "0"],
        "/usr/bin/puma",
        &[
            "-w",
            "2",
            "--bind",
            "unix:///out/server.sock",
            "/opt/leakhunt/fixtures/server/app.ru",
        ],
    );
    command.env("WIDGET_LIB", "/out/libwidget.so");
    let s = super::servers::Serving::launch(command, true, (scratch, tmpdir, bundle), socket);
    let (r, report) = super::servers::rounds_between_loads(s);
    let ctx = r.context();
    let ruby = &r.last_sidecar().ruby.version;
    assert!(ruby.starts_with(ROOT_VERSION), "the root runs Ruby {ruby}");
    let workers = super::servers::workers(&r);
    assert_eq!(workers.len(), 2, "{ctx}");
    for w in &workers {
        assert_eq!((w.first_round, w.last_round), (Some(1), Some(3)), "{ctx}");
        let (created, released, site) = super::servers::widget_counts(&r, w.pid);
        assert!(created >= 240 && released == 0, "{ctx}");
        assert_eq!(
            site,
            Some(("app.rb".into(), super::servers::app_leak_line())),
            "{ctx}"
        );
    }
    super::servers::assert_leak_in_every_worker(
        &r,
        &report,
        "app.rb",
        super::servers::app_leak_line(),
    );
    super::servers::assert_tree_gone(&r);
}

/// Under Bundler with a Gemfile that lists neither fiddle nor ffi (Ruby 3.3's bundler).
#[test]
fn ruby_3_3_under_bundler_without_fiddle_the_check_runs_and_prints_nothing() {
    let Some((r, _)) = run_in_root(
        super::bundler::OPTIONS,
        "/out/app.rb",
        &["7"],
        &[
            ("BUNDLE_GEMFILE", "/out/Gemfile"),
            ("RUBYOPT", "-rbundler/setup"),
        ],
        super::bundler::write_app,
        "",
    ) else {
        return;
    };
    super::bundler::assert_checked_and_quiet(&r);
}

/// fixtures/agent/frame-sites.rb on Ruby 3.3, natively and under LSan: the agent's frame sites
/// agree with caller_locations (3.3 has other frames: `Integer#times` in Ruby, `<internal:`).
#[test]
fn ruby_3_3_frame_sites_agree_with_caller_locations_in_every_shape() {
    let Some(root) = ruby_root() else {
        return;
    };
    let lsan = "/usr/lib/x86_64-linux-gnu/liblsan.so.0";
    for preload in ["", lsan] {
        let out = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--fork",
                "--",
                "sh",
                "-euc",
            ])
            .arg(
                r#"root=$1 fixtures=$2 agent=$3 preload=$4
mkdir -p "$root/opt/leakhunt/fixtures" "$root/opt/leakhunt/agent"
mount -t proc proc "$root/proc"
mount --bind "$fixtures" "$root/opt/leakhunt/fixtures"
mount --bind "$agent" "$root/opt/leakhunt/agent"
exec chroot "$root" /usr/bin/env LD_PRELOAD="$preload" \
  LSAN_OPTIONS=fast_unwind_on_malloc=0:leak_check_at_exit=0:detect_leaks=1 \
  /usr/bin/ruby -r /opt/leakhunt/agent/agent.rb /opt/leakhunt/fixtures/agent/frame-sites.rb"#,
            )
            .arg("sh")
            .arg(&root)
            .arg(fixture(""))
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/src/run"))
            .arg(preload)
            .stdin(Stdio::null())
            .output()
            .expect("spawn unshare (util-linux)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains(", 0 different"),
            "preload {preload:?}: {}\n{stdout}\n{stderr}",
            out.status
        );
    }
}
