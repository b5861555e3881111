use std::process::ExitCode;

fn main() -> ExitCode {
    tcptrace::cli::main()
}
