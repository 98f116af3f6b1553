//! The `lodge` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    lodge::cli::main(lodge::cli::Cli::parse())
}
