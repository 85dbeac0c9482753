//! The control-plane client (`--control-plane URL`): one long-lived `GET` whose response body is
//! a stream of newline-delimited JSON [`ProxyConfig`] documents. The wire format is the contract
//! with the mesh control plane and is written down in the crate README.
//!
//! [`ControlPlane::next`] hides the connection: it connects, reads, and on any failure
//! reconnects with capped exponential back-off (with jitter), so the caller only ever sees
//! documents, valid or not, and keeps serving its current config in between.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::Rng;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::config::{ConfigError, ProxyConfig};
use crate::io::Io;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::tls::{self, MeshTls, TlsError};

/// How to reach the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// `http://host:port/path?query` or `https://…`; sent as is, so the query can say which
    /// proxy is asking.
    pub url: String,
    /// Trust anchors (PEM) for an `https` URL; required for `https`.
    pub ca: Option<PathBuf>,
    /// The proxy's mesh identity, presented as a client certificate to an `https` control
    /// plane so that it knows which workload is asking (the one in use at each connect).
    pub identity: Option<Arc<MeshTls>>,
    /// First reconnect delay; doubled after each failure up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Cap of the reconnect delay.
    pub max_backoff: Duration,
    /// Limit for TCP connect, TLS handshake and response headers.
    pub connect_timeout: Duration,
    /// Reconnect when nothing (not even a blank heartbeat line) arrives for this long; `None`
    /// waits forever.
    pub idle_timeout: Option<Duration>,
    /// Largest document accepted; a longer line is rejected (and skipped) as a whole.
    pub max_document_bytes: usize,
}

impl ControlPlaneOptions {
    /// Defaults for `url`: back-off 500ms…30s, connect timeout 10s, idle timeout 5m, 16 MiB.
    pub fn new(url: impl Into<String>) -> Self {
        ControlPlaneOptions {
            url: url.into(),
            ca: None,
            identity: None,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            max_document_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why the control-plane client could not be set up (bad flags).
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The URL is unusable.
    #[error("--control-plane {url:?}: {message}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The CA file could not be loaded.
    #[error("--control-plane-ca: {0}")]
    Tls(#[from] TlsError),
}

/// Why one stream ended; logged, then the client reconnects.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS handshake with {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("connecting to {0}: timed out")]
    Timeout(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the control plane answered {0}")]
    Status(StatusCode),
    #[error("the control plane closed the stream")]
    Closed,
    #[error("no data for {0:?}")]
    Idle(Duration),
}

/// Capped exponential back-off with "equal jitter": each delay is uniform in `[d/2, d]` where
/// `d` doubles from `initial` up to `max`, so that proxies restarted together do not reconnect
/// in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max: max.max(initial), current: initial }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (d * 2).min(self.max);
        d / 2 + d.mul_f64(rand::rng().random::<f64>() / 2.0)
    }

    /// Back to `initial` (after a stream delivered something).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

struct Target {
    uri: Uri,
    authority: String,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Target {
    fn parse(opts: &ControlPlaneOptions) -> Result<Self, ControlPlaneError> {
        let bad = |message: &str| ControlPlaneError::Url { url: opts.url.clone(), message: message.into() };
        let uri: Uri = opts.url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("must be an http:// or https:// URL")),
        };
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?.clone();
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match (https, &opts.ca) {
            (false, _) => None,
            (true, None) => return Err(bad("an https URL needs --control-plane-ca")),
            (true, Some(ca)) => {
                let name =
                    ServerName::try_from(host.clone()).map_err(|_| bad("host is not a valid TLS server name"))?;
                let config = tls::https_client_config(ca, opts.identity.clone())?;
                Some((tokio_rustls::TlsConnector::from(config), name))
            }
        };
        Ok(Target { uri, authority: authority.to_string(), host, port, tls })
    }

    async fn connect(&self) -> Result<Lines, StreamError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| StreamError::Connect(self.authority.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector.connect(name.clone(), tcp).await.map_err(|e| StreamError::Tls(self.authority.clone(), e))?,
            ),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "control-plane connection ended");
            }
        });
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let req = Request::get(path)
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/x-ndjson")
            .header(header::USER_AGENT, concat!("kapal-proxy/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|_| StreamError::Status(StatusCode::BAD_REQUEST))?;
        let res = sender.send_request(req).await?;
        if res.status() != StatusCode::OK {
            return Err(StreamError::Status(res.status()));
        }
        Ok(Lines { _sender: sender, body: res.into_body(), buf: BytesMut::new(), skipping: false })
    }
}

/// One open stream, split into lines.
struct Lines {
    // Kept so that hyper keeps the connection for the life of the stream.
    _sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    body: Incoming,
    buf: BytesMut,
    /// Inside a line that was too long: drop bytes up to its newline.
    skipping: bool,
}

enum Line {
    Document(Bytes),
    TooLarge,
}

impl Lines {
    async fn next_line(&mut self, idle: Option<Duration>, max: usize) -> Result<Line, StreamError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line = self.buf.split_to(pos + 1);
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                line.truncate(pos);
                return Ok(Line::Document(line.freeze()));
            }
            if self.buf.len() > max {
                self.buf.clear();
                if !std::mem::replace(&mut self.skipping, true) {
                    return Ok(Line::TooLarge);
                }
            }
            let frame = match idle {
                None => self.body.frame().await,
                Some(idle) => {
                    tokio::time::timeout(idle, self.body.frame()).await.map_err(|_| StreamError::Idle(idle))?
                }
            };
            match frame {
                None => return Err(StreamError::Closed),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// A config stream from the control plane that reconnects by itself.
pub struct ControlPlane {
    target: Target,
    opts: ControlPlaneOptions,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    stream: Option<Lines>,
}

impl ControlPlane {
    /// Checks the URL and loads the CA; connects lazily on [`ControlPlane::next`].
    pub fn new(opts: ControlPlaneOptions, metrics: Arc<Metrics>) -> Result<Self, ControlPlaneError> {
        let target = Target::parse(&opts)?;
        let backoff = Backoff::new(opts.initial_backoff, opts.max_backoff);
        Ok(ControlPlane { target, opts, backoff, metrics, stream: None })
    }

    fn count(&self, result: &'static str) {
        self.metrics.control_plane_streams.get_or_create(&OutcomeLabels { result }).inc();
    }

    /// The next document: a validated config, or why the document was rejected. Connection
    /// problems never surface here: they are logged, counted and retried with back-off.
    pub async fn next(&mut self) -> Result<ProxyConfig, ConfigError> {
        loop {
            let lines = match &mut self.stream {
                Some(lines) => lines,
                None => {
                    let connected = tokio::time::timeout(self.opts.connect_timeout, self.target.connect())
                        .await
                        .unwrap_or_else(|_| Err(StreamError::Timeout(self.target.authority.clone())));
                    match connected {
                        Ok(lines) => {
                            self.count("connected");
                            tracing::info!(url = %self.opts.url, "control-plane stream open");
                            self.stream.insert(lines)
                        }
                        Err(error) => {
                            self.count("connect_error");
                            let delay = self.backoff.next_delay();
                            tracing::warn!(url = %self.opts.url, %error, ?delay, "control plane unreachable; retrying");
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                    }
                }
            };
            match lines.next_line(self.opts.idle_timeout, self.opts.max_document_bytes).await {
                Ok(Line::Document(line)) => {
                    self.backoff.reset();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return parse_document(&line);
                }
                Ok(Line::TooLarge) => {
                    self.backoff.reset();
                    let max = self.opts.max_document_bytes;
                    return Err(ConfigError::Parse(format!("document larger than {max} bytes")));
                }
                Err(error) => {
                    self.stream = None;
                    self.count("disconnected");
                    let delay = self.backoff.next_delay();
                    tracing::warn!(url = %self.opts.url, %error, ?delay, "control-plane stream ended; reconnecting");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Parses one line of the stream.
pub fn parse_document(line: &[u8]) -> Result<ProxyConfig, ConfigError> {
    let text = std::str::from_utf8(line).map_err(|e| ConfigError::Parse(format!("document is not UTF-8: {e}")))?;
    ProxyConfig::from_json(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        for cap in [1, 2, 4, 8, 8, 8] {
            let d = b.next_delay();
            let cap = Duration::from_secs(cap);
            assert!(d >= cap / 2 && d <= cap, "{d:?} not within [{:?}, {cap:?}]", cap / 2);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn urls_are_checked_and_name_the_flag() {
        let err = |url: &str| ControlPlane::new(ControlPlaneOptions::new(url), Arc::default()).err().unwrap();
        assert!(err("ftp://cp:1").to_string().contains("--control-plane \"ftp://cp:1\""));
        assert!(err("https://cp:8443/stream").to_string().contains("--control-plane-ca"));
        assert!(err("cp:8443").to_string().contains("must be an http"));
        assert!(err("not a url").to_string().contains("--control-plane \"not a url\""));
        let mut opts = ControlPlaneOptions::new("https://cp/x");
        opts.ca = Some("/nonexistent/ca.pem".into());
        let err = ControlPlane::new(opts, Arc::default()).err().unwrap().to_string();
        assert!(err.contains("--control-plane-ca") && err.contains("/nonexistent/ca.pem"), "{err}");
        assert!(ControlPlane::new(ControlPlaneOptions::new("http://127.0.0.1:1/x?pod=a"), Arc::default()).is_ok());
    }

    #[test]
    fn documents_must_be_utf8_json_configs() {
        assert!(parse_document(b"{\"apiVersion\":\"kapal.dev/v1alpha1\",\"kind\":\"ProxyConfig\"}").is_ok());
        // CRLF line ends leave a `\r`, which is JSON whitespace.
        assert!(parse_document(b"{\"apiVersion\":\"kapal.dev/v1alpha1\",\"kind\":\"ProxyConfig\"}\r").is_ok());
        assert!(matches!(parse_document(b"\xff{}"), Err(ConfigError::Parse(m)) if m.contains("UTF-8")));
        assert!(matches!(parse_document(b"kind: ProxyConfig"), Err(ConfigError::Parse(_))));
    }
}
