//! The call being served: its captured output and its pipes.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::error::PipeError;
use crate::pb::mesh_client::MeshClient;
use crate::pb::CallRequest;
use crate::value::{decode, encode, Value};

const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300); // the Python client's default

/// The Apply headers a pipe passes on: the call's token (the mesh then knows the
/// pipeline: cycles, depth, deadline) and its trace.
pub(crate) const FORWARDED: [&str; 3] = ["algomesh-call", "traceparent", "tracestate"];

/// The call an `apply` is serving.
pub struct Call {
    pub(crate) headers: Vec<(&'static str, MetadataValue<tonic::metadata::Ascii>)>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) captured: Option<Arc<Mutex<Vec<u8>>>>,
    pub(crate) runtime: tokio::runtime::Handle,
}

/// Where a call prints: its captured output, or the process's stdout.
pub struct CallStdout {
    captured: Option<Arc<Mutex<Vec<u8>>>>,
}

impl Write for CallStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.captured {
            Some(b) => {
                b.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
                Ok(buf.len())
            }
            None => std::io::stdout().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &self.captured {
            Some(_) => Ok(()),
            None => std::io::stdout().flush(),
        }
    }
}

impl Call {
    /// A writer for this call's output (`writeln!(call.stdout(), ...)`): returned to the
    /// caller when it asked for stdout, else the process's stdout (the instance log).
    pub fn stdout(&self) -> CallStdout {
        CallStdout { captured: self.captured.clone() }
    }

    /// Print `s` to this call's output.
    pub fn print(&self, s: impl std::fmt::Display) {
        let _ = write!(self.stdout(), "{s}");
    }

    /// Print `s` and a newline to this call's output.
    pub fn println(&self, s: impl std::fmt::Display) {
        let _ = writeln!(self.stdout(), "{s}");
    }

    /// The time left before the call's deadline, if the caller set one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Call another algorithm ("owner/name" or "owner/name/VERSION") through this
    /// algorithm's sidecar and wait for its output. The pipe carries this call's token and
    /// trace and the time left of its deadline. Blocks the calling thread (apply runs on
    /// a thread of its own); for several pipes at once, use threads (`std::thread::scope`).
    pub fn pipe(&self, target: &str, input: impl Into<Value>) -> Result<Value, PipeError> {
        let request = CallRequest { input: Some(encode(input.into())), capture_stdout: false };
        let mut req = tonic::Request::new(request);
        let md: &mut MetadataMap = req.metadata_mut();
        for (k, v) in &self.headers {
            md.append(*k, v.clone());
        }
        match MetadataValue::try_from(target) {
            Ok(t) => {
                md.insert("algomesh-target", t);
            }
            Err(_) => return Err(PipeError::new(target, tonic::Status::invalid_argument(format!("bad target {target:?}")))),
        }
        req.set_timeout(self.remaining().unwrap_or(DEFAULT_TIMEOUT).max(Duration::from_millis(1)));
        let answer = self.runtime.block_on(async {
            let mut client = mesh_client().map_err(|s| PipeError::new(target, s))?;
            client.call(req).await.map_err(|s| PipeError::new(target, s))
        })?;
        let output = answer.into_inner().output.unwrap_or_default();
        decode(output).map_err(|e| {
            PipeError::new(target, tonic::Status::internal(format!("the answer of {target} cannot be decoded: {}", e.0)))
        })
    }
}

static CHANNEL: OnceLock<Result<Channel, String>> = OnceLock::new();

/// One channel per process to $ALGOMESH_ADDRESS (`unix://...`: the sidecar's outbound
/// socket), connected on first use.
fn mesh_client() -> Result<MeshClient<Channel>, tonic::Status> {
    let channel = CHANNEL.get_or_init(|| {
        let address = std::env::var("ALGOMESH_ADDRESS")
            .map_err(|_| "ALGOMESH_ADDRESS is not set: pipes need the sidecar's socket".to_owned())?;
        match address.strip_prefix("unix://").or_else(|| address.strip_prefix("unix:")) {
            Some(path) => {
                let path = path.to_owned();
                // The URI is not used: every connection goes to the socket.
                Ok(Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
                    move |_: tonic::transport::Uri| {
                        let path = path.clone();
                        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
                    },
                )))
            }
            None => Endpoint::from_shared(format!("http://{address}"))
                .map(|e| e.connect_lazy())
                .map_err(|e| format!("bad ALGOMESH_ADDRESS {address:?}: {e}")),
        }
    });
    match channel {
        Ok(ch) => Ok(MeshClient::new(ch.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)),
        Err(msg) => Err(tonic::Status::unavailable(msg.clone())),
    }
}

/// The deadline an Apply's grpc-timeout header sets ("100m", "5S", ...).
pub(crate) fn deadline_of(md: &MetadataMap, start: Instant) -> Option<Instant> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    start.checked_add(d)
}
