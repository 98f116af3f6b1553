//! The panel's side of the agent's reports (`contract::report`): the panel is the only
//! writer of the store, so what the agent applied, what failed and what the health checks
//! saw reach the store here.

use crate::contract::report::{self, Report};
use crate::store::Store;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Serves the agent's connections until the panel stops.
pub async fn serve(listener: UnixListener, store: Store) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the report socket");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(BufReader::new(stream), &store).await {
                tracing::warn!(error = %e, "a report connection broke");
            }
        });
    }
}

async fn connection(
    mut stream: BufReader<tokio::net::UnixStream>,
    store: &Store,
) -> std::io::Result<()> {
    while let Some(report) = report::read_report(&mut stream).await? {
        let result = match report {
            Ok(r) => write(store, &r).await,
            Err(why) => Err(why),
        };
        if let Err(why) = &result {
            tracing::warn!(why = %why, "an agent report was refused");
        }
        stream
            .get_mut()
            .write_all(report::answer(&result).as_bytes())
            .await?;
    }
    Ok(())
}

async fn write(store: &Store, report: &Report) -> Result<(), String> {
    crate::store::agent::store_report(store, report)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "storing an agent report");
            "the store refused it".to_owned()
        })
}
