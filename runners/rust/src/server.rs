//! The runner process: algomesh.v1.Runner on $ALGOMESH_RUNNER_SOCKET.

use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::call::{deadline_of, Call, FORWARDED};
use crate::error::{status, trim_backtrace, Error, BOUNDARY};
use crate::pb::runner_server::{Runner, RunnerServer};
use crate::pb::{CallRequest, CallResponse, LoadRequest, LoadResponse};
use crate::value::{decode, encode};
use crate::Algorithm;

const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Serve `algorithm` on `$ALGOMESH_RUNNER_SOCKET` until SIGTERM or until the sidecar
/// (`$ALGOMESH_PARENT_PID`) dies, then exit the process.
pub fn serve<A: Algorithm>(algorithm: A) -> ! {
    serve_boxed(Box::new(algorithm))
}

// Not generic: the server is compiled once, with the runner crate, not in every algorithm.
fn serve_boxed(algorithm: Box<dyn Algorithm>) -> ! {
    let socket = match std::env::var("ALGOMESH_RUNNER_SOCKET") {
        Ok(s) if !s.is_empty() => s,
        _ => {
            eprintln!("algomesh: ALGOMESH_RUNNER_SOCKET is not set; the algorithm's sidecar starts this program (docs/runners.md)");
            std::process::exit(2);
        }
    };
    let concurrency = std::env::var("ALGOMESH_CONCURRENCY").ok().and_then(|c| c.parse().ok()).filter(|&c| c > 0).unwrap_or(1);
    die_with_parent();
    install_panic_hook();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(run(algorithm, socket, concurrency));
    std::process::exit(0)
}

async fn run(algorithm: Box<dyn Algorithm>, socket: String, concurrency: usize) {
    let _ = std::fs::remove_file(&socket); // a stale socket from an earlier process
    let listener = match tokio::net::UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("algomesh: cannot serve on {socket}: {e}");
            std::process::exit(1);
        }
    };
    let service = Service {
        state: Arc::new(State {
            pending: Mutex::new(Some(algorithm)),
            loaded: tokio::sync::Mutex::new(None),
            ready: std::sync::OnceLock::new(),
            slots: Arc::new(Semaphore::new(concurrency)),
        }),
    };
    let server = RunnerServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        let _ = stop_tx.send(());
        // An apply still running (a call past its deadline) must not hold the process.
        tokio::time::sleep(Duration::from_secs(1)).await;
        std::process::exit(0);
    });
    let result = tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(server, incoming, async {
            let _ = stop_rx.await;
        })
        .await;
    if let Err(e) = result {
        eprintln!("algomesh: {e}");
        std::process::exit(1);
    }
}

struct State {
    pending: Mutex<Option<Box<dyn Algorithm>>>, // before a successful load()
    loaded: tokio::sync::Mutex<Option<f64>>,    // load()'s duration, once it succeeded
    ready: std::sync::OnceLock<Arc<dyn Algorithm>>, // after it
    slots: Arc<Semaphore>, // held until apply returns, even past the call's deadline
}

struct Service {
    state: Arc<State>,
}

fn runtime_name() -> String {
    format!("rust {}", env!("ALGOMESH_RUSTC_VERSION"))
}

#[tonic::async_trait]
impl Runner for Service {
    async fn load(&self, _req: Request<LoadRequest>) -> Result<Response<LoadResponse>, Status> {
        let mut loaded = self.state.loaded.lock().await;
        if let Some(duration) = *loaded {
            return Ok(Response::new(LoadResponse { duration, runtime: runtime_name() }));
        }
        let state = self.state.clone();
        let t0 = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let mut alg = state.pending.lock().unwrap().take().expect("the algorithm before load");
            let outcome = guarded(|| alg.load());
            match outcome {
                Ok(()) => {
                    let _ = state.ready.set(Arc::from(alg));
                    Ok(())
                }
                Err(failure) => {
                    *state.pending.lock().unwrap() = Some(alg); // a later Load tries again
                    Err(failure.into_status("ALGORITHM_LOAD_FAILED", HashMap::new()))
                }
            }
        })
        .await
        .map_err(|e| Status::internal(format!("load() did not finish: {e}")))?;
        result?;
        let duration = t0.elapsed().as_secs_f64();
        *loaded = Some(duration);
        Ok(Response::new(LoadResponse { duration, runtime: runtime_name() }))
    }

    async fn apply(&self, req: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        let start = Instant::now();
        let Some(alg) = self.state.ready.get().cloned() else {
            return Err(status("INTERNAL", "Apply before Load", "", HashMap::new()));
        };
        let deadline = deadline_of(req.metadata(), start);
        let mut headers = Vec::new();
        for key in FORWARDED {
            for v in req.metadata().get_all(key) {
                headers.push((key, v.clone()));
            }
        }
        let request = req.into_inner();
        let input = decode(request.input.unwrap_or_default())
            .map_err(|e| status("INVALID_INPUT", &e.0, "", HashMap::new()))?;
        let slot = self.state.slots.clone().acquire_owned().await.map_err(|_| Status::unavailable("shutting down"))?;
        let captured = request.capture_stdout.then(|| Arc::new(Mutex::new(Vec::new())));
        let call = Call { headers, deadline, captured: captured.clone(), runtime: tokio::runtime::Handle::current() };
        let (result, took) = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let t0 = Instant::now();
            let result = guarded(|| __algomesh_call_user(&*alg, &call, input));
            (result, t0.elapsed().as_secs_f64())
        })
        .await
        .map_err(|e| Status::internal(format!("apply() did not finish: {e}")))?;
        let printed = captured
            .map(|b| String::from_utf8_lossy(&b.lock().unwrap_or_else(|e| e.into_inner())).into_owned())
            .unwrap_or_default();
        match result {
            Ok(out) => Ok(Response::new(CallResponse { output: Some(encode(out)), stdout: printed, duration: took })),
            Err(failure) => {
                let mut meta = HashMap::new();
                if !printed.is_empty() {
                    meta.insert("stdout".to_owned(), printed);
                }
                Err(failure.into_status("ALGORITHM_ERROR", meta))
            }
        }
    }
}

/// The one frame between the runner and the algorithm: backtraces are cut here.
#[inline(never)]
#[allow(non_snake_case)]
fn __algomesh_call_user(alg: &dyn Algorithm, call: &Call, input: crate::Value) -> Result<crate::Value, Error> {
    let out = alg.apply(call, input);
    std::hint::black_box(BOUNDARY);
    out
}

/// How load or apply failed.
enum Failure {
    Error(Error),
    Panic { message: String, backtrace: String },
}

impl Failure {
    fn into_status(self, reason: &str, mut meta: HashMap<String, String>) -> Status {
        match self {
            Failure::Error(e) => {
                if let Some(pipe) = e.as_pipe_error() {
                    if reason == "ALGORITHM_ERROR" && pipe.reason() != "INTERNAL" {
                        // A typed error from one of its own pipes that the algorithm let
                        // through: it keeps its status (CALL_CYCLE, ALGORITHM_NOT_FOUND...).
                        return pipe.answer();
                    }
                }
                meta.insert("error_type".to_owned(), e.type_name.to_owned());
                let message = e.inner.to_string();
                let message = if message.is_empty() { e.type_name.to_owned() } else { message };
                let stack = format!("{}: {}\n{}", e.type_name, message, trim_backtrace(&e.backtrace.to_string()));
                status(reason, &message, &stack, meta)
            }
            Failure::Panic { message, backtrace } => {
                meta.insert("error_type".to_owned(), "panic".to_owned());
                status(reason, &message, &backtrace, meta)
            }
        }
    }
}

thread_local! {
    // The last panic on this thread: (message with its location, backtrace).
    static PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = match info.payload().downcast_ref::<&str>() {
            Some(s) => (*s).to_owned(),
            None => info.payload().downcast_ref::<String>().cloned().unwrap_or_else(|| "Box<dyn Any>".to_owned()),
        };
        let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())).unwrap_or_default();
        let backtrace = trim_backtrace(&Backtrace::force_capture().to_string());
        PANIC.with(|p| *p.borrow_mut() = Some((message, format!("panicked at {location}\n{backtrace}"))));
        previous(info); // the instance log shows it too
    }));
}

/// Run f, turning a panic into a Failure with its backtrace.
fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Error(e)),
        Err(payload) => {
            let (message, backtrace) = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| {
                let m = payload.downcast_ref::<&str>().map(|s| (*s).to_owned()).unwrap_or_else(|| "panic".to_owned());
                (m, "(no backtrace)".to_owned())
            });
            Err(Failure::Panic { message, backtrace })
        }
    }
}

/// SIGTERM this process when the sidecar dies (prctl PR_SET_PDEATHSIG), exit now if it
/// already has, and poll as a second line.
fn die_with_parent() {
    let Some(want) = std::env::var("ALGOMESH_PARENT_PID").ok().and_then(|p| p.parse::<i32>().ok()) else {
        return;
    };
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
    let gone = move || unsafe { libc::getppid() } != want;
    if gone() {
        eprintln!("algomesh: parent process is gone; exiting");
        std::process::exit(1);
    }
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        if gone() {
            eprintln!("algomesh: parent process is gone; exiting");
            std::process::exit(1);
        }
    });
}
