//! SIGINT and SIGTERM: the first one cancels the run, which then unlocks what it locked and
//! removes what it created before exiting non-zero. Later ones are acknowledged and ignored,
//! so a second Ctrl-C cannot leave jobs locked. (bbr asks for confirmation and then exits
//! without unlocking; SIGTERM kills it outright.)

use cairn::workflow::RunContext;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

/// Watches for signals until aborted.
pub(crate) fn watch(context: RunContext) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("Cannot watch for SIGINT/SIGTERM");
            return;
        };
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            if context.cancel.is_cancelled() {
                tracing::warn!(
                    "Received {name} again: still unlocking and cleaning up, please wait"
                );
            } else {
                tracing::warn!("Received {name}: stopping; locked jobs will be unlocked and remote artifact directories removed (a --resumable drain keeps them for `backup --resume`)");
                context.interrupt(name);
            }
        }
    })
}
