use std::process::ExitCode;

use crate::cli::TraceArgs;

pub async fn run(_args: TraceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("trace is not built yet")
}
