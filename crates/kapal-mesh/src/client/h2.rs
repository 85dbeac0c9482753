//! The shared HTTP/2 connection of one endpoint: every request is a stream on it; a new one is
//! opened when it has closed.

use std::sync::Mutex;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::{Connector, SendError};
use crate::{Body, BoxError};

type Sender = http2::SendRequest<Body>;

/// One HTTP/2 connection to an endpoint, opened on first use.
#[derive(Default)]
pub(super) struct Shared {
    conn: Mutex<Option<Sender>>,
    /// Held while connecting, so that concurrent requests share one attempt; remembers when
    /// and why the last attempt failed, so that the requests that waited for it fail with it
    /// instead of each trying (and timing out) in turn.
    connecting: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl Shared {
    /// Sends `req` (absolute URI) as a stream of the shared connection. A request the
    /// connection refused before sending anything (it had just closed) goes on a new one.
    pub(super) async fn send(
        &self,
        connector: &Connector,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, SendError> {
        let mut tx = match self.current() {
            Some(tx) => tx,
            // Boxed, like the HTTP/1.1 pool's: a cold path that would make every request's
            // future big.
            None => Box::pin(self.connect(connector)).await?,
        };
        let res = match tx.try_send_request(req).await {
            Ok(res) => res,
            Err(mut e) => match e.take_message() {
                Some(unsent) => Box::pin(self.connect(connector)).await?.send_request(unsent).await.map_err(io)?,
                None => return Err(io(e.into_error())),
            },
        };
        Ok(res.map(Body::incoming))
    }

    fn current(&self) -> Option<Sender> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.as_ref().filter(|tx| tx.is_ready()).cloned()
    }

    async fn connect(&self, connector: &Connector) -> Result<Sender, SendError> {
        let waiting_since = Instant::now();
        let mut last_failure = self.connecting.lock().await;
        if let Some(tx) = self.current() {
            return Ok(tx);
        }
        if let Some((at, why)) = &*last_failure
            && *at >= waiting_since
        {
            return Err(SendError::Connect(why.clone().into()));
        }
        match handshake(connector).await {
            Ok(tx) => {
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
                Ok(tx)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.to_string()));
                Err(SendError::Connect(e))
            }
        }
    }
}

async fn handshake(connector: &Connector) -> Result<Sender, BoxError> {
    let io = connector.connect(false).await?;
    let (mut tx, conn) =
        http2::Builder::new(TokioExecutor::new()).timer(TokioTimer::new()).handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, "upstream HTTP/2 connection failed");
        }
    });
    tx.ready().await?;
    Ok(tx)
}

fn io(e: hyper::Error) -> SendError {
    SendError::Io(Box::new(e))
}
