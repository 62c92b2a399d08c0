//! `leakhunt snapshot BUNDLE`: ask the `leakhunt run` recording BUNDLE for a round now (after a
//! load-test phase, say), wait for it, and say how it went.

use crate::cli::SnapshotArgs;
use crate::error::Result;
use std::time::Duration;

/// Longest wait for the round: valgrind's deadline is 180 s per snapshot, and the captures of
/// one round run at once.
const WAIT: Duration = Duration::from_secs(600);

pub fn run(args: SnapshotArgs) -> Result<i32> {
    let taken = crate::run::control::request_round(&args.bundle, WAIT)?;
    println!(
        "round {}: {} of {} process(es) snapshotted",
        taken.round, taken.taken, taken.asked
    );
    Ok(crate::error::exit::OK)
}
