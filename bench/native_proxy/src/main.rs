//! A bare native gRPC forwarding proxy for `python -m bench` (bench/_native.py): the native
//! counterpart of bench/_bare.py's grpc.aio proxy, to price what a sidecar hop costs when
//! the sidecar is not Python. It forwards `/algomesh.v1.Mesh/Call` as raw bytes (no decoding,
//! no metadata, no checks) over one persistent upstream connection per route, and passes an
//! upstream status back as it came.
//!
//!     algomesh-bench-native-proxy [--tls CREDS] --route LISTEN=UPSTREAM [--route ...]
//!
//! LISTEN is `tls:HOST:PORT` (mutual TLS: a client certificate from the CA in CREDS is
//! required) or `unix:PATH` (plain, as between a sidecar and its runner); UPSTREAM is
//! `tls:HOST:PORT` (mutual TLS, presenting CREDS' certificate; the server is checked as
//! `mesh.algomesh`, the name every mesh certificate carries) or `unix:PATH`. CREDS is the
//! JSON file of PEM `ca`, `cert` and `key` that bench/_bare.py's `--tls` reads. One process
//! serves every route on one thread (tokio's current-thread runtime). It prints
//! `port P1 P2 ...` (0 for a Unix socket) once every route listens, and runs until killed.
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

const CALL_PATH: &str = "/algomesh.v1.Mesh/Call";
const TLS_NAME: &str = "mesh.algomesh";

/// Messages as the bytes they are on the wire: nothing is decoded.
#[derive(Clone, Copy, Default)]
struct Raw;
struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One route's service: every call to Mesh/Call goes on to the upstream.
#[derive(Clone)]
struct Forward {
    upstream: tonic::client::Grpc<Channel>,
}

struct Unary(tonic::client::Grpc<Channel>);

impl tonic::server::UnaryService<Bytes> for Unary {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;
    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let mut upstream = self.0.clone();
        Box::pin(async move {
            upstream.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
            let path = http::uri::PathAndQuery::from_static(CALL_PATH);
            let answer = upstream.unary(Request::new(request.into_inner()), path, Raw).await?;
            Ok(Response::new(answer.into_inner()))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Forward {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let upstream = self.upstream.clone();
        Box::pin(async move {
            if request.uri().path() != CALL_PATH {
                return Ok(Status::unimplemented(format!("{} is not forwarded", request.uri().path())).into_http());
            }
            Ok(tonic::server::Grpc::new(Raw).unary(Unary(upstream), request).await)
        })
    }
}

impl tonic::server::NamedService for Forward {
    const NAME: &'static str = "algomesh.v1.Mesh";
}

#[derive(Clone)]
struct Creds {
    ca: Certificate,
    identity: Identity,
}

fn read_creds(path: &str) -> Result<Creds, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let pem = |k: &str| doc[k].as_str().map(str::to_owned).ok_or(format!("{path}: no PEM {k:?}"));
    Ok(Creds { ca: Certificate::from_pem(pem("ca")?), identity: Identity::from_pem(pem("cert")?, pem("key")?) })
}

fn upstream(spec: &str, creds: Option<&Creds>) -> Result<Channel, String> {
    if let Some(path) = spec.strip_prefix("unix:") {
        let path = path.to_owned();
        let connector = tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        return Ok(Endpoint::from_static("http://localhost").connect_with_connector_lazy(connector));
    }
    let address = spec.strip_prefix("tls:").ok_or(format!("upstream {spec:?}: tls:HOST:PORT or unix:PATH"))?;
    let creds = creds.ok_or("a tls: upstream needs --tls CREDS")?;
    let tls = ClientTlsConfig::new()
        .domain_name(TLS_NAME)
        .ca_certificate(creds.ca.clone())
        .identity(creds.identity.clone());
    let endpoint = Endpoint::from_shared(format!("https://{address}")).map_err(|e| format!("{spec}: {e}"))?;
    Ok(endpoint.tls_config(tls).map_err(|e| format!("{spec}: {e}"))?.connect_lazy())
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

async fn listen(spec: &str, creds: Option<&Creds>) -> Result<(Listener, u16), String> {
    if let Some(path) = spec.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let l = tokio::net::UnixListener::bind(path).map_err(|e| format!("{spec}: {e}"))?;
        return Ok((Listener::Unix(l), 0));
    }
    let address = spec.strip_prefix("tls:").ok_or(format!("listen {spec:?}: tls:HOST:PORT or unix:PATH"))?;
    creds.ok_or("a tls: listener needs --tls CREDS")?;
    let l = tokio::net::TcpListener::bind(address).await.map_err(|e| format!("{spec}: {e}"))?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    Ok((Listener::Tcp(l), port))
}

async fn serve(listener: Listener, forward: Forward, creds: Option<Creds>) -> Result<(), String> {
    let mut server = Server::builder();
    match listener {
        Listener::Unix(l) => {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(l);
            server.add_service(forward).serve_with_incoming(incoming).await.map_err(|e| e.to_string())
        }
        Listener::Tcp(l) => {
            let creds = creds.expect("listen() checked that a tls: listener has credentials");
            let tls = ServerTlsConfig::new().identity(creds.identity.clone()).client_ca_root(creds.ca.clone());
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
            let mut server = server.tls_config(tls).map_err(|e| e.to_string())?;
            server.add_service(forward).serve_with_incoming(incoming).await.map_err(|e| e.to_string())
        }
    }
}

async fn run(args: Vec<String>) -> Result<(), String> {
    let mut creds = None;
    let mut routes = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let value = it.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--tls" => creds = Some(read_creds(&value)?),
            "--route" => routes.push(value.split_once('=').map(|(l, u)| (l.to_owned(), u.to_owned()))
                .ok_or(format!("--route {value:?}: LISTEN=UPSTREAM"))?),
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    if routes.is_empty() {
        return Err("usage: algomesh-bench-native-proxy [--tls CREDS] --route LISTEN=UPSTREAM ...".into());
    }
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for (l, u) in &routes {
        let forward = Forward { upstream: tonic::client::Grpc::new(upstream(u, creds.as_ref())?) };
        let (listener, port) = listen(l, creds.as_ref()).await?;
        ports.push(port.to_string());
        servers.push((listener, forward));
    }
    println!("port {}", ports.join(" "));
    let tasks: Vec<_> = servers.into_iter()
        .map(|(listener, forward)| tokio::spawn(serve(listener, forward, creds.clone())))
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    if let Err(e) = runtime.block_on(run(std::env::args().skip(1).collect())) {
        eprintln!("algomesh-bench-native-proxy: {e}");
        std::process::exit(2);
    }
}
