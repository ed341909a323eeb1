//! `kfd`: parse the command line, run, exit with the command's code.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
