//! Errors: the algorithm's own (ALGORITHM_ERROR with a backtrace) and those of its pipes
//! (kept as they came), and how both become gRPC statuses (docs/contract.md).

use std::backtrace::Backtrace;
use std::collections::HashMap;
use std::fmt;

use prost::Message;
use tonic::{Code, Status};

pub(crate) const DOMAIN: &str = "algomesh";

// google.rpc.Status, ErrorInfo and DebugInfo (google/rpc/status.proto, error_details.proto).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ErrorInfo {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(string, tag = "2")]
    pub domain: String,
    #[prost(map = "string, string", tag = "3")]
    pub metadata: HashMap<String, String>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct DebugInfo {
    #[prost(string, repeated, tag = "1")]
    pub stack_entries: Vec<String>,
    #[prost(string, tag = "2")]
    pub detail: String,
}

const ERROR_INFO_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const DEBUG_INFO_URL: &str = "type.googleapis.com/google.rpc.DebugInfo";

// A status travels in trailing metadata, which gRPC caps at 8 KiB: the message twice and
// the stack trace once. The Python runner's cuts, in UTF-8 bytes (sdk/_errors.py).
const MESSAGE_BYTES: usize = 512;
const STACK_BYTES: usize = 2560;
const META_BYTES: usize = 160;
const CUT: &str = "…(cut)";

/// The first `limit` bytes of `s`, on a char boundary.
pub(crate) fn cut_head(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_owned();
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT}", &s[..end])
}

fn code_of(reason: &str) -> Code {
    match reason {
        "ALGORITHM_ERROR" => Code::Unknown,
        "ALGORITHM_LOAD_FAILED" => Code::FailedPrecondition,
        "INVALID_INPUT" => Code::InvalidArgument,
        "DEADLINE_EXCEEDED" => Code::DeadlineExceeded,
        "MESH_UNAVAILABLE" => Code::Unavailable,
        "PAYLOAD_TOO_LARGE" => Code::ResourceExhausted,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        "PERMISSION_DENIED" => Code::PermissionDenied,
        "ALGORITHM_NOT_FOUND" => Code::NotFound,
        "INTERNAL" => Code::Internal,
        _ => Code::Unknown,
    }
}

/// The reason of a status that came without an ErrorInfo (a transport failure), as the
/// Python SDK names it.
fn fallback_reason(code: Code) -> &'static str {
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

fn any(type_url: &str, msg: &impl Message) -> prost_types::Any {
    prost_types::Any { type_url: type_url.to_owned(), value: msg.encode_to_vec() }
}

/// The algomesh error status: google.rpc.Status{code, message, details: [ErrorInfo,
/// DebugInfo]} in grpc-status-details-bin. The stack keeps its head: a Rust backtrace
/// starts with the innermost frame.
pub(crate) fn status(reason: &str, message: &str, stack: &str, metadata: HashMap<String, String>) -> Status {
    let code = code_of(reason);
    let message = cut_head(message, MESSAGE_BYTES);
    let metadata = metadata.into_iter().map(|(k, v)| (cut_head(&k, 64), cut_head(&v, META_BYTES))).collect();
    let mut details =
        vec![any(ERROR_INFO_URL, &ErrorInfo { reason: reason.to_owned(), domain: DOMAIN.to_owned(), metadata })];
    if !stack.is_empty() {
        details.push(any(DEBUG_INFO_URL, &DebugInfo { stack_entries: vec![], detail: cut_head(stack, STACK_BYTES) }));
    }
    let body = RpcStatus { code: code as i32, message: message.clone(), details };
    Status::with_details(code, message, body.encode_to_vec().into())
}

/// An error status returned by a pipe (`Call::pipe`): its code, message and details
/// (grpc-status-details-bin) as they came. When `apply` returns it (through `?` or
/// not), the runner answers with that same status, so its reason (ALGORITHM_NOT_FOUND,
/// CALL_CYCLE, the failing stage's ALGORITHM_ERROR) reaches the caller.
#[derive(Debug, Clone)]
pub struct PipeError {
    /// The algorithm piped to.
    pub target: String,
    status: Status,
    stack: String, // where the pipe was made
}

impl PipeError {
    pub(crate) fn new(target: &str, status: Status) -> PipeError {
        PipeError { target: target.to_owned(), status, stack: Backtrace::force_capture().to_string() }
    }

    /// The gRPC status as it came.
    pub fn status(&self) -> &Status {
        &self.status
    }

    pub fn code(&self) -> Code {
        self.status.code()
    }

    pub fn message(&self) -> &str {
        self.status.message()
    }

    fn details(&self) -> Option<RpcStatus> {
        let raw = self.status.details();
        if raw.is_empty() {
            return None;
        }
        RpcStatus::decode(raw).ok()
    }

    fn info(&self) -> Option<ErrorInfo> {
        self.details()?.details.iter().find_map(|d| {
            (d.type_url == ERROR_INFO_URL)
                .then(|| ErrorInfo::decode(d.value.as_slice()).ok())
                .flatten()
                .filter(|i| i.domain == DOMAIN)
        })
    }

    /// The algomesh reason (ErrorInfo.reason), or the one its code stands for when the
    /// status carried no ErrorInfo.
    pub fn reason(&self) -> String {
        match self.info() {
            Some(info) => info.reason,
            None => fallback_reason(self.code()).to_owned(),
        }
    }

    /// The ErrorInfo's metadata (algorithm, version, error_type...).
    pub fn metadata(&self) -> HashMap<String, String> {
        match self.info() {
            Some(info) => info.metadata,
            None => HashMap::from([("grpc_code".to_owned(), format!("{:?}", self.code()))]),
        }
    }

    /// The failing algorithm's stack trace (DebugInfo.detail), if it sent one.
    pub fn stack_trace(&self) -> Option<String> {
        self.details()?.details.iter().find_map(|d| {
            (d.type_url == DEBUG_INFO_URL).then(|| DebugInfo::decode(d.value.as_slice()).ok()).flatten().map(|d| d.detail)
        })
    }

    /// The status the runner answers with when apply lets this error escape.
    pub(crate) fn answer(&self) -> Status {
        let stack = trim_backtrace(&self.stack);
        let Some(mut details) = self.details().filter(|_| self.info().is_some()) else {
            // A bare transport status: give it the reason its code stands for.
            return status(&self.reason(), self.message(), &stack, self.metadata());
        };
        if self.stack_trace().is_some() {
            return self.status.clone();
        }
        details.details.push(any(DEBUG_INFO_URL, &DebugInfo { stack_entries: vec![], detail: cut_head(&stack, STACK_BYTES) }));
        Status::with_details(self.code(), self.message(), details.encode_to_vec().into())
    }
}

impl fmt::Display for PipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason(), self.message())
    }
}

impl std::error::Error for PipeError {}

/// What `load` and `apply` return on failure: any error (`?` converts it, recording the
/// backtrace where it did), or `Error::msg("...")`. It is ALGORITHM_ERROR with the error's
/// message, its type as `error_type` and that backtrace (ALGORITHM_LOAD_FAILED in load);
/// a `PipeError` is answered as the status it carries.
pub struct Error {
    pub(crate) inner: Box<dyn std::error::Error + Send + Sync + 'static>,
    pub(crate) type_name: &'static str,
    pub(crate) backtrace: Backtrace,
}

impl Error {
    /// An error with this message (and the backtrace of where it is made).
    pub fn msg(message: impl fmt::Display) -> Error {
        Error {
            inner: message.to_string().into(),
            type_name: "algomesh_runner::Error",
            backtrace: Backtrace::force_capture(),
        }
    }

    /// The pipe's error, if this is one.
    pub fn as_pipe_error(&self) -> Option<&PipeError> {
        self.inner.downcast_ref::<PipeError>()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(e: E) -> Error {
        Error { inner: Box::new(e), type_name: std::any::type_name::<E>(), backtrace: Backtrace::force_capture() }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}\n{}", self.type_name, self.inner, self.backtrace)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

/// The name of the function between the runner and the algorithm's code: a backtrace is
/// cut at it, so it ends with the algorithm's outermost frame.
pub(crate) const BOUNDARY: &str = "__algomesh_call_user";

/// A backtrace without the frames above the algorithm's code (capturing it, panicking)
/// nor below it (the runner, tokio, the thread).
pub(crate) fn trim_backtrace(bt: &str) -> String {
    // Frames start with "  N: name"; their "at file:line" lines follow.
    let mut frames: Vec<Vec<&str>> = Vec::new();
    for line in bt.lines() {
        let t = line.trim_start();
        let starts = t.split_once(": ").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if starts || frames.is_empty() {
            frames.push(vec![line]);
        } else {
            frames.last_mut().unwrap().push(line);
        }
    }
    let name = |f: &Vec<&str>| f[0].trim_start().split_once(": ").map(|(_, n)| n.to_owned()).unwrap_or_default();
    let end = frames.iter().position(|f| name(f).contains(BOUNDARY)).unwrap_or(frames.len());
    let machinery = |n: &str| {
        n.starts_with("std::backtrace")
            || n.starts_with("std::panicking")
            || n.starts_with("std::panic::")
            || n.starts_with("core::panicking")
            || n.starts_with("std::sys::backtrace")
            || n.contains("rust_begin_unwind")
            || n.contains("__rust_end_short_backtrace")
            || n.starts_with("algomesh_runner::")
            || n.starts_with("<algomesh_runner::")
            || n.starts_with("<alloc::boxed::Box<F,A> as core::ops::function::Fn")
    };
    // With line tables, frames are named shortly ("from<E>"): tell the runner's own by file.
    let ours = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");
    let in_runner = |f: &Vec<&str>| f[1..].iter().any(|l| l.contains(ours));
    let try_machinery = |n: &str| n.starts_with("from_residual") || n.contains("core::ops::try_trait::FromResidual");
    let start = frames[..end]
        .iter()
        .rposition(|f| machinery(&name(f)) || try_machinery(&name(f)) || in_runner(f))
        .map_or(0, |i| i + 1);
    let kept = if start < end { &frames[start..end] } else { &frames[..end] };
    kept.iter().flatten().copied().collect::<Vec<_>>().join("\n")
}
