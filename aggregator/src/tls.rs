//! TLS on both gRPC ports (the review's S15): tokens, plans and grants
//! must not cross the network in clear text.
//!
//! The certificate and key are PEM files (the chart mounts them from a
//! Secret). They are read again every [`RELOAD_EVERY`]; when either changed
//! and both parse and match, new connections get the new certificate, and
//! open ones keep theirs. A bad pair is refused and logged, and the old one
//! stays: a half-written Secret never takes the port down.
//!
//! Handshakes run on their own tasks, at most [`MAX_HANDSHAKES`] at once and
//! each within [`HANDSHAKE_TIMEOUT`], so a client that opens a connection
//! and says nothing holds neither the accept loop nor other clients.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

/// How often the certificate files are read again. A Secret's update
/// reaches the pod's volume within about a minute; this adds at most 10 s.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once; more connections wait.
const MAX_HANDSHAKES: usize = 128;
/// A client must finish its handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest certificate or key file read (a chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::Tls(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(Error::Tls(format!("{} is over 1 MiB", path.display())));
    }
    Ok(bytes)
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Arc<CertifiedKey>> {
    let bad = |m: String| Error::Tls(format!("{what}: {m}"));
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("the certificate file is not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(bad("the certificate file holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| bad(format!("the key file holds no PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|e| bad(format!("the key does not fit the certificate: {e}")))
}

/// The certificate to present, swapped when its files change.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Current>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    /// The files' bytes it was made from, to notice a change.
    source: (Vec<u8>, Vec<u8>),
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .key
                .clone(),
        )
    }
}

impl Reloading {
    fn what(&self) -> String {
        format!("{} and {}", self.cert.display(), self.key.display())
    }

    /// Read the files again; `Ok(true)` if a new certificate is in use.
    fn reload(&self) -> Result<bool> {
        let source = (read_pem(&self.cert)?, read_pem(&self.key)?);
        if self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .source
            == source
        {
            return Ok(false);
        }
        let key = certified_key(&source.0, &source.1, &self.what())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Current { key, source };
        Ok(true)
    }
}

/// A TLS acceptor presenting the certificate in `cert` with the key in
/// `key`, both reloaded when they change (a task, stopped when the
/// acceptor's last copy goes). An unusable pair at start is an error.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let source = (read_pem(cert)?, read_pem(key)?);
    let what = format!("{} and {}", cert.display(), key.display());
    let first = certified_key(&source.0, &source.1, &what)?;
    let resolver = Arc::new(Reloading {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        current: RwLock::new(Current { key: first, source }),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    let weak = Arc::downgrade(&resolver);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(r) = weak.upgrade() else { return };
            match r.reload() {
                Ok(true) => info!(files = %r.what(), "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "TLS certificate files changed but cannot be used; keeping the previous certificate");
                }
            }
        }
    });
    info!(files = %what, "TLS on");
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A connection the gRPC server serves: plain TCP (TLS off) or TLS over it.
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Conn {
    // The peer's address either way (`Request::remote_addr`).
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Self::Plain(s) => s.connect_info(),
            Self::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The connections of `incoming` to serve: as they are without `tls`, else
/// once their handshake succeeded (a failed one is logged at debug and
/// dropped: a port scanner is not news).
pub fn serve(
    mut incoming: ReceiverStream<io::Result<TcpStream>>,
    tls: Option<TlsAcceptor>,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        while let Some(accepted) = incoming.next().await {
            let stream = match accepted {
                Ok(s) => s,
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Some(acceptor) = &tls else {
                if tx.send(Ok(Conn::Plain(stream))).await.is_err() {
                    return;
                }
                continue;
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let peer = stream.peer_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(Conn::Tls(Box::new(s)))).await;
                    }
                    Ok(Err(e)) => debug!(?peer, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(?peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests;
