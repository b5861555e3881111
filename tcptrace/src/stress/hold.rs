//! `hold`: open `--count` connections (at most `--concurrency` connects in
//! flight) and keep them all open, the way a client with a huge pool or a
//! connection leak does; report how many were made, why the others failed,
//! and which of the held ones the peer closed or reset while held.

use std::sync::Arc;

use tokio::{io::AsyncReadExt as _, sync::Semaphore, task::JoinSet};

use crate::{
    cli::HoldArgs,
    stress::{
        Mode, Run,
        classify::{self, Class},
        connect::{connect, into_stream},
        report::{Live, Tally},
    },
};

pub async fn run(run: Run, args: HoldArgs) -> anyhow::Result<Tally> {
    let live = Live::new(args.concurrency as usize);
    let _progress = live.progress(Mode::Hold, run.start);
    let connecting = Arc::new(Semaphore::new(args.concurrency as usize));
    let (release, released) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    for i in 0..args.count {
        let permit = tokio::select! {
            permit = Arc::clone(&connecting).acquire_owned() => permit?,
            () = tokio::time::sleep_until(run.deadline.into()) => break,
            () = run.stop() => break,
        };
        let (run, live, mut released) = (run.clone(), Arc::clone(&live), released.clone());
        let worker = usize::try_from(i).unwrap_or_default();
        tasks.spawn(async move {
            let started = std::time::Instant::now();
            let result = connect(run.target.addr, run.connect_timeout)
                .await
                .and_then(into_stream);
            drop(permit);
            let mut stream = match result {
                Ok(stream) => {
                    live.with(worker, |t| t.connect_ok(started.elapsed()));
                    stream
                }
                Err(class) => return live.with(worker, |t| t.connect_failed(class)),
            };
            tokio::select! {
                _ = released.wait_for(|released| *released) => live.with(worker, |t| t.held += 1),
                class = watch_peer(&mut stream) => live.with(worker, |t| t.lost(class)),
            }
        });
    }
    // Every connect has finished once all permits are back.
    tokio::select! {
        _ = connecting.acquire_many(args.concurrency) => {}
        () = tokio::time::sleep_until(run.deadline.into()) => {}
        () = run.stop() => {}
    }
    let until = match args.hold {
        Some(hold) => run.deadline.min(std::time::Instant::now() + hold),
        None => run.deadline,
    };
    run.sleep_until(until).await;
    release.send_replace(true);
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    Ok(live.total())
}

/// Waits until the peer ends a held connection: FIN (EOF) or an error.
/// Anything the peer sends meanwhile is read and ignored.
async fn watch_peer(stream: &mut tokio::net::TcpStream) -> Class {
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) => return Class::Borrowed(classify::EOF),
            Ok(_) => continue,
            Err(err) => return classify::io_error(&err),
        }
    }
}
