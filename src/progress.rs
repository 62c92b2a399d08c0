//! Progress on stderr with indicatif: bars for reading large inputs, a spinner for `run`.
//!
//! Everything here draws only when stderr is a terminal (indicatif's stderr target hides itself
//! otherwise), so piping or redirecting leakhunt never mixes progress into logs. Reports go to
//! stdout and never pass through here.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Inputs smaller than this finish too fast for a bar to be worth drawing.
pub const BAR_THRESHOLD: u64 = 32 * 1024 * 1024;

fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() && std::env::var_os("LEAKHUNT_NO_PROGRESS").is_none() {
        ProgressDrawTarget::stderr_with_hz(10)
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A byte-count bar for reading `total` bytes of `label`; hidden for small inputs.
pub fn bytes_bar(label: &str, total: u64) -> ProgressBar {
    if total < BAR_THRESHOLD {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), target());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:20!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    bar
}

/// A spinner whose message the caller updates (phase, snapshots, footprint).
pub fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
