//! Calling algomesh from Rust (docs/clients.md): algomesh.v1.Mesh/Call on `algomesh up`'s
//! public port, and one Registry RPC (ListAlgorithms), with tonic clients generated from
//! proto/ by build.rs. Errors are decoded from grpc-status-details-bin with tonic-types.
//!
//!     algomesh-client [--address HOST:PORT] [--key API_KEY] [--timeout SECONDS] call TARGET INPUT_JSON
//!     algomesh-client [--address HOST:PORT] [--key API_KEY] list
//!
//! --address defaults to $ALGOMESH_ADDRESS, then localhost:7700; --key to $ALGOMESH_API_KEY.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

pub mod pb {
    tonic::include_proto!("algomesh.v1");
}

use pb::mesh_client::MeshClient;
use pb::registry_client::RegistryClient;
use pb::{CallRequest, ContentType, ListAlgorithmsRequest, Payload};

const USAGE: &str = "usage: algomesh-client [--address HOST:PORT] [--key API_KEY] [--timeout SECONDS] call TARGET INPUT_JSON
       algomesh-client [--address HOST:PORT] [--key API_KEY] list";

/// As the Python SDK: the transport's ceiling; the mesh's payload limit (10 MiB by default) is policy.
const MAX_MESSAGE: usize = 64 << 20;

struct Options {
    address: String,
    key: String,
    timeout: Duration,
    rest: Vec<String>,
}

fn usage(message: &str) -> ExitCode {
    if !message.is_empty() {
        eprintln!("algomesh-client: {message}");
    }
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        address: std::env::var("ALGOMESH_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "localhost:7700".into()),
        key: std::env::var("ALGOMESH_API_KEY").unwrap_or_default(),
        timeout: Duration::from_secs(300),
        rest: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--address" | "--key" | "--timeout" => {
                let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
                match arg.as_str() {
                    "--address" => opts.address = value,
                    "--key" => opts.key = value,
                    _ => {
                        let secs: f64 = value
                            .parse()
                            .map_err(|_| "--timeout takes seconds".to_string())?;
                        opts.timeout = Duration::try_from_secs_f64(secs)
                            .ok()
                            .filter(|d| !d.is_zero())
                            .ok_or("--timeout must be a positive number of seconds")?;
                    }
                }
            }
            "-h" | "--help" => return Err(String::new()),
            _ => opts.rest.push(arg),
        }
    }
    Ok(opts)
}

/// A request carrying the API key (and the target, for Mesh.Call) in its metadata.
fn request<T>(opts: &Options, message: T, target: Option<&str>) -> Result<Request<T>, String> {
    let mut req = Request::new(message);
    req.set_timeout(opts.timeout);
    let md = req.metadata_mut();
    if !opts.key.is_empty() {
        let auth = MetadataValue::try_from(format!("Simple {}", opts.key))
            .map_err(|_| "the API key is not ASCII")?;
        md.insert("authorization", auth);
    }
    if let Some(target) = target {
        md.insert(
            "algomesh-target",
            MetadataValue::try_from(target).map_err(|_| "the target is not ASCII")?,
        );
    }
    Ok(req)
}

/// A status without an ErrorInfo (the transport failed, nothing of algomesh answered) maps
/// by its code, as the Python SDK does (docs/contract.md, "Errors").
fn fallback(code: Code) -> &'static str {
    match code {
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::Unavailable => "MESH_UNAVAILABLE",
        Code::ResourceExhausted => "PAYLOAD_TOO_LARGE",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::NotFound => "ALGORITHM_NOT_FOUND",
        Code::InvalidArgument => "INVALID_INPUT",
        _ => "INTERNAL",
    }
}

/// The code as the proto spells it (NOT_FOUND).
fn code_name(code: Code) -> String {
    let mut out = String::new();
    for (i, ch) in format!("{code:?}").chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    if out == "CANCELLED" || out == "CANCELED" {
        "CANCELLED".into()
    } else {
        out
    }
}

/// Prints the typed error carried in grpc-status-details-bin (a google.rpc.Status with an
/// ErrorInfo and, for algorithm errors, a DebugInfo).
fn print_error(status: &Status) -> ExitCode {
    let details = status.get_error_details();
    let (reason, metadata) = match details.error_info() {
        Some(info) if info.domain == "algomesh" => (
            info.reason.clone(),
            info.metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        ),
        _ => (fallback(status.code()).to_string(), BTreeMap::new()),
    };
    eprintln!(
        "error: {reason} (gRPC {}): {}",
        code_name(status.code()),
        status.message()
    );
    for (key, value) in &metadata {
        eprintln!("  {key}: {value}");
    }
    if let Some(debug) = details.debug_info() {
        if !debug.detail.is_empty() {
            eprintln!(
                "stack trace:\n  {}",
                debug.detail.trim_end().replace('\n', "\n  ")
            );
        }
    }
    if let Some(id) = metadata.get("trace_id") {
        println!("trace-id: {id}");
    }
    ExitCode::from(1)
}

fn print_payload(payload: Option<&Payload>) {
    let data: &[u8] = payload.map(|p| p.data.as_slice()).unwrap_or_default();
    match payload.and_then(|p| ContentType::try_from(p.content_type).ok()) {
        Some(ContentType::Json) => match serde_json::from_slice::<serde_json::Value>(data) {
            Ok(value) => println!("result (json): {value}"),
            Err(_) => println!("result (json): {}", String::from_utf8_lossy(data)),
        },
        Some(ContentType::Text) => println!("result (text): {}", String::from_utf8_lossy(data)),
        _ => println!(
            "result (binary, {} bytes): {}",
            data.len(),
            base64::engine::general_purpose::STANDARD.encode(data)
        ),
    }
}

fn trailer<'a>(md: &'a MetadataMap, key: &str) -> &'a str {
    md.get(key).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn call(opts: &Options, channel: Channel, target: &str, input: &str) -> ExitCode {
    if serde_json::from_str::<serde_json::Value>(input).is_err() {
        return usage("INPUT_JSON is not JSON; a text input is a JSON string, e.g. '\"hello\"'");
    }
    let message = CallRequest {
        input: Some(Payload {
            content_type: ContentType::Json as i32,
            data: input.as_bytes().to_vec(),
        }),
        capture_stdout: false,
    };
    let req = match request(opts, message, Some(target)) {
        Ok(req) => req,
        Err(e) => return usage(&e),
    };
    // The response's metadata holds the trailers too (tonic merges them for unary calls).
    match MeshClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
        .call(req)
        .await
    {
        Ok(res) => {
            print_payload(res.get_ref().output.as_ref());
            let md = res.metadata();
            println!(
                "algorithm: {} {}",
                trailer(md, "algomesh-algorithm"),
                trailer(md, "algomesh-version")
            );
            println!("trace-id: {}", trailer(md, "algomesh-trace-id"));
            ExitCode::SUCCESS
        }
        Err(status) => print_error(&status),
    }
}

async fn list(opts: &Options, channel: Channel) -> ExitCode {
    let req = match request(opts, ListAlgorithmsRequest {}, None) {
        Ok(req) => req,
        Err(e) => return usage(&e),
    };
    match RegistryClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .list_algorithms(req)
        .await
    {
        Ok(res) => {
            for a in &res.get_ref().algorithms {
                println!("{}  {}  {}", a.name, a.latest_version, a.description);
            }
            ExitCode::SUCCESS
        }
        Err(status) => print_error(&status),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(e) => return usage(&e),
    };
    let endpoint = match Endpoint::from_shared(format!("http://{}", opts.address)) {
        Ok(endpoint) => endpoint.timeout(opts.timeout),
        Err(e) => return usage(&format!("bad address {:?}: {e}", opts.address)),
    };
    // Lazy: a mesh that cannot be reached is the call's UNAVAILABLE status, typed like the rest.
    let channel = endpoint.connect_lazy();
    let rest: Vec<&str> = opts.rest.iter().map(String::as_str).collect();
    match rest.as_slice() {
        ["call", target, input] => call(&opts, channel, target, input).await,
        ["list"] => list(&opts, channel).await,
        [] => usage("no command"),
        [command, ..] => usage(&format!("bad arguments for {command}")),
    }
}
