use std::process::ExitCode;

fn main() -> ExitCode {
    tcptrace::app::main()
}
