//! The `leakhunt` binary: parse the command line, run, map errors to exit codes.

use clap::Parser;

fn main() {
    let cli = leakhunt::cli::Cli::parse();
    let code = match leakhunt::cmd::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leakhunt: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
