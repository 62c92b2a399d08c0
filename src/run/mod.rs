//! `leakhunt run`: start the target under a native backend with the Ruby agent, take snapshots,
//! write the bundle. To be written (issue 4).
