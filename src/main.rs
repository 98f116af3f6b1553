//! The `lodge` binary: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc rather than the system allocator: the proxy allocates and frees small buffers
/// on every request from two threads, where glibc's malloc spent a fifth of its time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lodge::cli::main(lodge::cli::Cli::parse())
}
