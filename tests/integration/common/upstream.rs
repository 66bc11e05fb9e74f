//! Real HTTP servers for ticketgate to talk to: an upstream that reports back what it
//! received, and a JWKS endpoint whose keys and availability a test controls.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

type Handler = Arc<dyn Fn(Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// A server on an ephemeral port; `stop` closes the listener and every open connection.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    open: Arc<AtomicUsize>,
}

/// A TCP connection counted as open until it is dropped, also after an upgrade moved it
/// into a WebSocket task.
struct Counted {
    stream: tokio::net::TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Server {
    pub async fn start(handler: Handler) -> Server {
        Server::start_on("127.0.0.1:0".parse().expect("an address"), handler).await
    }

    /// On `addr`: an upstream that comes back where it was.
    pub async fn start_on(addr: SocketAddr, handler: Handler) -> Server {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, mut stopped) = oneshot::channel();
        let open = Arc::new(AtomicUsize::new(0));
        let counter = open.clone();
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        counter.fetch_add(1, Ordering::SeqCst);
                        let stream = Counted { stream, open: counter.clone() };
                        let handler = handler.clone();
                        connections.spawn(async move {
                            let service = service_fn(move |req| {
                                let response = handler(req);
                                async move { Ok::<_, Infallible>(response) }
                            });
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()
                                .await;
                        });
                    }
                    _ = &mut stopped => break,
                }
            }
            connections.abort_all();
        });
        Server {
            addr,
            stop: Some(stop),
            open,
        }
    }

    /// Connections open now (a WebSocket's until its socket is dropped).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the upstream received: method, URI and headers (each name with all its values).
fn report(req: &Request<Incoming>) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let entry = headers
            .entry(name.as_str())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(values) = entry {
            values.push(String::from_utf8_lossy(value.as_bytes()).into());
        }
    }
    serde_json::json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
    })
}

/// An upstream answering every request with its `report` as JSON. A WebSocket upgrade gets
/// a 101; the server then sends the report as its first text message and echoes every
/// message after it, frame for frame.
pub async fn echo() -> Server {
    echo_on("127.0.0.1:0".parse().expect("an address")).await
}

/// `echo` on `addr`.
pub async fn echo_on(addr: SocketAddr) -> Server {
    Server::start_on(
        addr,
        Arc::new(|req: Request<Incoming>| {
            let seen = report(&req);
            if req.headers().contains_key("upgrade") {
                return ticketgate::demo::echo::accept(req, Some(seen.to_string()))
                    .expect("a WebSocket handshake");
            }
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(seen.to_string())))
                .expect("response")
        }),
    )
    .await
}

/// Answers a WebSocket handshake with a 101 and hands the upgraded connection to `then`.
fn accept_websocket<F, Fut>(mut req: Request<Incoming>, then: F) -> Response<Full<Bytes>>
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec());
    let accept = derive_accept_key(&key.expect("a WebSocket handshake"));
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            then(TokioIo::new(upgraded)).await;
        }
    });
    Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .body(Full::new(Bytes::new()))
        .expect("101")
}

/// An upstream that accepts every WebSocket upgrade and then sends 16 KiB binary frames as
/// fast as they are taken, until its connection is closed: a client that stops reading
/// soon has every buffer between them full. Also how many frames it has sent so far.
pub async fn flooding_websocket() -> (Server, Arc<AtomicUsize>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    let server = Server::start(Arc::new(move |req: Request<Incoming>| {
        let counted = counted.clone();
        accept_websocket(req, |mut client| async move {
            use tokio::io::AsyncWriteExt;
            let mut frame = vec![0x82, 126];
            frame.extend(16_384u16.to_be_bytes());
            frame.extend(std::iter::repeat_n(b'f', 16_384));
            while client.write_all(&frame).await.is_ok() {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        })
    }))
    .await;
    (server, sent)
}

/// An upstream that answers every request with a 200 and a 64 MiB body.
pub async fn large_body() -> Server {
    Server::start(Arc::new(|_req: Request<Incoming>| {
        Response::builder()
            .body(Full::new(Bytes::from(vec![b'x'; 64 << 20])))
            .expect("response")
    }))
    .await
}

/// An upstream that holds each WebSocket handshake until the test releases it: `arrived`
/// tells when a handshake is in, `release` lets the 101 go. Counts open connections.
pub struct HeldUpgrade {
    pub addr: SocketAddr,
    pub arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
    pub release: Arc<tokio::sync::Notify>,
    pub open: Arc<AtomicUsize>,
}

pub async fn held_upgrade() -> HeldUpgrade {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (arrive, arrived) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let open = Arc::new(AtomicUsize::new(0));
    let (released, counter) = (release.clone(), open.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut stream = Counted {
                stream,
                open: counter.clone(),
            };
            let (arrive, released) = (arrive.clone(), released.clone());
            tokio::spawn(async move {
                let Some(answer) = read_handshake(&mut stream.stream).await else {
                    return;
                };
                let _ = arrive.send(());
                released.notified().await;
                if stream.write_all(answer.as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
                }
            });
        }
    });
    HeldUpgrade {
        addr,
        arrived,
        release,
        open,
    }
}

/// Reads a WebSocket handshake's head from `stream`; the 101 head that answers it (`None`
/// when the connection ends first).
pub async fn read_handshake(stream: &mut tokio::net::TcpStream) -> Option<String> {
    read_upgrade(stream).await.map(|(_, answer)| answer)
}

/// Reads a WebSocket handshake's head from `stream`: the head as received, and the 101 head
/// that answers it (`None` when the connection ends first).
pub async fn read_upgrade(stream: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let key = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    Some((text, answer))
}

/// An upstream that accepts connections and reads their requests but never answers.
pub async fn mute() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
            });
        }
    });
    addr
}

/// A JWKS endpoint: serves `body` (503 while it is `None`) and counts fetches.
pub struct Jwks {
    pub server: Server,
    pub body: Arc<Mutex<Option<String>>>,
    pub hits: Arc<AtomicUsize>,
}

impl Jwks {
    pub async fn start(initial: String) -> Jwks {
        let body = Arc::new(Mutex::new(Some(initial)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (body.clone(), hits.clone());
        let server = Server::start(Arc::new(move |_req: Request<Incoming>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let current = served.lock().expect("jwks body").clone();
            match current {
                Some(json) => Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(json))),
                None => Response::builder()
                    .status(503)
                    .body(Full::new(Bytes::new())),
            }
            .expect("response")
        }))
        .await;
        Jwks { server, body, hits }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.server.addr)
    }

    pub fn set(&self, json: Option<String>) {
        *self.body.lock().expect("jwks body") = json;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// An upstream that answers one request with a bare 200 and hands back the request's head
/// byte for byte (hyper would lowercase header names; this keeps their spelling).
pub async fn raw_once() -> (SocketAddr, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let head = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed before the request head ended");
            head.extend_from_slice(&buf[..n]);
        }
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        stream.write_all(answer).await.expect("write");
        String::from_utf8_lossy(&head).into_owned()
    });
    (addr, head)
}
