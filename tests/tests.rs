//! The one integration-test binary (STYLE.md: tests in three layers). Each module covers one
//! area; end-to-end modules run real Ruby programs under real backends.

// Linux-only: they run programs under LeakSanitizer and valgrind.
#[cfg(target_os = "linux")]
mod analyze_e2e;
mod cli;
mod common;
mod heap_cruby;
mod heap_rubinius;
mod layers;
mod macos_build;
mod native_leaks;
mod native_linux;
mod report_html;
#[cfg(target_os = "linux")]
mod run_e2e;
