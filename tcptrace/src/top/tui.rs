//! The interactive `top` (ratatui + crossterm). Not built yet: falls back
//! to plain snapshots.

use std::process::ExitCode;

use crate::{aggregate::Aggregate, cli::TopArgs, tracer::Tracer};

pub async fn run(
    tracer: &mut Tracer,
    agg: Aggregate,
    args: &TopArgs,
    stop: impl Future<Output = &'static str>,
) -> anyhow::Result<ExitCode> {
    super::plain_loop(tracer, agg, args, stop).await
}
