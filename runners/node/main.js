#!/usr/bin/env node
'use strict';
// The Node.js runner process: `node $ALGOMESH_RUNNERS/node/main.js` (sidecar/runtimes.py).
//
// Serves algomesh.v1.Runner on $ALGOMESH_RUNNER_SOCKET for the CommonJS module
// $ALGOMESH_PATH/$ALGOMESH_ENTRYPOINT, which exports apply(input, state) (sync or async)
// and optionally load() (sync or async; what it returns is apply's second argument).
// docs/runners.md (## Node.js) is the author's guide; tests/conformance/ the contract.
const fs = require('fs');
const path = require('path');
const Module = require('module');

// require('algomesh-runner') from the algorithm's folder finds this package.
const NODE_PATH_DIR = path.join(__dirname, 'node_path');
process.env.NODE_PATH = [NODE_PATH_DIR, process.env.NODE_PATH].filter(Boolean).join(path.delimiter);
Module._initPaths();

const wire = require('./lib/wire');
const context = require('./lib/context');

const { grpc } = wire;
const RUNTIME = `node ${process.versions.node}`;

function env(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (fallback !== undefined) return fallback;
    process.stderr.write(`algomesh node runner: ${name} is not set\n`);
    process.exit(2);
  }
  return v;
}

const SOCKET = env('ALGOMESH_RUNNER_SOCKET');
const ALGO_PATH = path.resolve(env('ALGOMESH_PATH', process.cwd()));
const ENTRYPOINT = env('ALGOMESH_ENTRYPOINT');
const CONCURRENCY = Math.max(1, parseInt(env('ALGOMESH_CONCURRENCY', '1'), 10) || 1);

// ------------------------------------------------------------------ die with the parent

// Node has no prctl(PR_SET_PDEATHSIG): poll. A runner whose sidecar died is re-parented.
const PARENT = process.env.ALGOMESH_PARENT_PID ? parseInt(process.env.ALGOMESH_PARENT_PID, 10) : null;
function parentGone() {
  if (PARENT === null) return false;
  if (process.ppid !== PARENT) return true;
  try {
    process.kill(PARENT, 0);
    return false;
  } catch (e) {
    return e.code === 'ESRCH';
  }
}
if (parentGone()) {
  process.stderr.write('algomesh node runner: parent process is gone; exiting\n');
  process.exit(1);
}
setInterval(() => {
  if (parentGone()) process.exit(1);
}, 500).unref();

// ------------------------------------------------------------------ captured output

// console.log and process.stdout.write of a call that asked for its output go to that
// call's buffer (AsyncLocalStorage follows its awaits, timers and callbacks); everything
// else goes to the real stdout, the instance log.
const realWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = function write(chunk, encoding, cb) {
  const call = context.current();
  if (call && call.out) {
    if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    if (typeof chunk === 'string') {
      call.out.push(encoding && encoding !== 'utf8' && encoding !== 'utf-8' ? Buffer.from(chunk, encoding).toString('utf8') : chunk);
    } else {
      call.out.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('utf8'));
    }
    if (cb) process.nextTick(cb);
    return true;
  }
  return realWrite(chunk, encoding, cb);
};

// ------------------------------------------------------------------ the algorithm

const runnerDir = __dirname + path.sep;

/** The error's stack without the runner's own frames (a non-Error thrown has none). */
function userStack(err) {
  if (err instanceof Error && typeof err.stack === 'string' && err.stack) {
    return err.stack.split('\n')
      .filter((line) => !line.includes(runnerDir) && !line.includes('at AsyncLocalStorage.run (node:'))
      .join('\n');
  }
  return `${describe(err)}\n    (a ${typeName(err)} was thrown, not an Error: no stack trace)`;
}

function typeName(err) {
  if (err !== null && typeof err === 'object' && err.constructor && err.constructor.name) return err.constructor.name;
  return err === null ? 'null' : typeof err;
}

function describe(err) {
  if (err instanceof Error) return err.message || err.name || typeName(err);
  try {
    return typeof err === 'string' ? err : JSON.stringify(err) || String(err);
  } catch (_) {
    return String(err);
  }
}

const algorithm = { module: null, state: undefined, loaded: false, loading: null, seconds: 0 };

async function loadAlgorithm() {
  const t0 = process.hrtime.bigint();
  const file = path.resolve(ALGO_PATH, ENTRYPOINT);
  try {
    const mod = require(file);
    if (!mod || typeof mod.apply !== 'function') {
      throw new TypeError(`${ENTRYPOINT} does not export an apply(input) function`);
    }
    algorithm.state = typeof mod.load === 'function' ? await mod.load() : undefined;
    algorithm.module = mod;
  } catch (e) {
    throw wire.algomeshError('ALGORITHM_LOAD_FAILED', `${typeName(e)}: ${describe(e)}`, {
      stacktrace: userStack(e), metadata: { error_type: typeName(e) },
    });
  }
  algorithm.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  algorithm.loaded = true;
}

function load(call, callback) {
  if (!algorithm.loading) {
    algorithm.loading = loadAlgorithm();
    algorithm.loading.catch(() => { algorithm.loading = null; }); // a failed load may be retried
  }
  algorithm.loading.then(
    () => callback(null, { duration: algorithm.seconds, runtime: RUNTIME }),
    (e) => callback(wire.toServiceError(e)),
  );
}

// ------------------------------------------------------------------ apply

class Slots {
  constructor(n) {
    this.free = n;
    this.waiting = [];
  }

  acquire() {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release() {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}

const slots = new Slots(CONCURRENCY);

function deadlineOf(call) {
  const d = call.getDeadline();
  if (d instanceof Date) return d.getTime();
  return Number.isFinite(d) ? d : null;
}

async function serveApply(call) {
  if (!algorithm.loaded) throw wire.algomeshError('INTERNAL', 'Apply before Load');
  let request;
  try {
    request = wire.CallRequest.decode(call.request);
  } catch (_) {
    throw wire.algomeshError('INVALID_INPUT', 'the request body is not an algomesh.v1.CallRequest');
  }
  const input = wire.decodePayload(request.input);
  const forward = [];
  for (const key of context.FORWARDED) {
    for (const value of call.metadata.get(key)) forward.push([key, String(value)]);
  }
  const store = { forward, deadline: deadlineOf(call), out: request.capture_stdout ? [] : null };
  await slots.acquire();
  let output;
  let seconds;
  try {
    const t0 = process.hrtime.bigint();
    try {
      output = await context.calls.run(store, () => algorithm.module.apply(input, algorithm.state));
    } catch (e) {
      throw algorithmError(e, store.out);
    }
    seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  } finally {
    slots.release();
  }
  let payload;
  try {
    payload = wire.encodePayload(output);
  } catch (e) {
    throw wire.algomeshError('ALGORITHM_ERROR', `apply() returned a value that cannot be sent: ${e.message}`, {
      metadata: { error_type: 'TypeError' }, stacktrace: userStack(e),
    });
  }
  const body = wire.CallResponse.encode(wire.CallResponse.create({
    output: payload, stdout: store.out ? store.out.join('') : '', duration: seconds,
  })).finish();
  return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

/** What an exception in apply becomes. A pipe's error that apply let through keeps its
 * status (CALL_CYCLE, ALGORITHM_NOT_FOUND, the failing stage's ALGORITHM_ERROR...). */
function algorithmError(e, out) {
  if (e instanceof wire.AlgomeshError && e.reason !== 'INTERNAL') {
    e.passThrough = userStack(e);
    return e;
  }
  const metadata = { error_type: typeName(e) };
  if (out && out.length) metadata.stdout = out.join('');
  return wire.algomeshError('ALGORITHM_ERROR', describe(e), { metadata, stacktrace: userStack(e) });
}

function apply(call, callback) {
  serveApply(call).then(
    (body) => callback(null, body),
    (e) => {
      if (!(e instanceof wire.AlgomeshError)) {
        e = wire.algomeshError('INTERNAL', `the node runner failed: ${describe(e)}`, { stacktrace: userStack(e) });
      }
      callback(wire.toServiceError(e, e.passThrough));
    },
  );
}

// ------------------------------------------------------------------ serve

function main() {
  const runner = wire.services['algomesh.v1.Runner'];
  const identity = (b) => b;
  const service = {
    Load: runner.Load,
    // Raw bytes in and out: a body that is not a CallRequest is the caller's mistake
    // (INVALID_INPUT), which a deserializer could only report as INTERNAL.
    Apply: { ...runner.Apply, requestDeserialize: identity, responseSerialize: identity },
  };
  const server = new grpc.Server({
    'grpc.max_receive_message_length': wire.MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': wire.MAX_MESSAGE_BYTES,
  });
  server.addService(service, { Load: load, Apply: apply });
  try {
    fs.unlinkSync(SOCKET);
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
  server.bindAsync(`unix://${SOCKET}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) {
      process.stderr.write(`algomesh node runner: cannot serve on ${SOCKET}: ${err.message}\n`);
      process.exit(1);
    }
  });
  const stop = () => {
    server.forceShutdown();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
