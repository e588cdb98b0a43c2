//! The `roster` command line.

fn main() -> std::process::ExitCode {
    roster::cli::main()
}
