'use strict';
// algomesh for Node.js algorithms: require('algomesh-runner').
//
//   const algomesh = require('algomesh-runner');
//   exports.apply = async (input) => {
//     const r = await algomesh.algo('demo/clean').pipe(input);
//     return { clean: r.result };
//   };
//
// A pipe is a Mesh.Call on $ALGOMESH_ADDRESS (the sidecar's outbound socket) carrying the
// served call's algomesh-call/traceparent/tracestate headers and what remains of its
// deadline, so the mesh sees the pipeline (cycles, depth) and the trace links up.
const wire = require('./lib/wire');
const context = require('./lib/context');

const { grpc } = wire;
const CALL_METHOD = '/algomesh.v1.Mesh/Call';
const DEFAULT_TIMEOUT = 300; // seconds, as the Python SDK
const TARGET = /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.*-]+)?$/;
const identity = (b) => b;

/** A finished call: .result (string for TEXT, Buffer for BINARY, JSON values otherwise)
 * and .metadata (contentType, duration, algorithm, version, stdout, traceId). */
class Response {
  constructor(body, trailers) {
    this._response = wire.CallResponse.decode(body);
    this._trailers = trailers;
  }

  get result() {
    return wire.decodePayload(this._response.output);
  }

  get metadata() {
    const r = this._response;
    const t = (k) => { const v = this._trailers ? this._trailers.get(k)[0] : undefined; return v === undefined ? '' : String(v); };
    return {
      contentType: wire.CONTENT_TYPE_NAMES[r.output ? r.output.content_type : 0] || 'unspecified',
      duration: r.duration,
      algorithm: t('algomesh-algorithm'),
      version: t('algomesh-version'),
      stdout: r.stdout ? r.stdout : null,
      coldStart: t('algomesh-cold-start') === '1',
      traceId: t('algomesh-trace-id'),
    };
  }
}

class Algorithm {
  constructor(client, ref) {
    if (typeof ref !== 'string' || !TARGET.test(ref)) {
      throw wire.algomeshError('INVALID_TARGET', `name an algorithm as owner/name[/version], not ${JSON.stringify(ref)}`);
    }
    this.client = client;
    this.target = ref;
    this.options = { timeout: DEFAULT_TIMEOUT, stdout: false };
  }

  /** Algorithmia's options: timeout (seconds) and stdout (capture what the callee prints). */
  setOptions({ timeout, stdout } = {}) {
    if (timeout !== undefined) this.options.timeout = Number(timeout);
    if (stdout !== undefined) this.options.stdout = Boolean(stdout);
    return this;
  }

  /** Call the algorithm with ``input``: a Promise of a Response; a failed call rejects
   * with an AlgomeshError (its reason, code and status kept). */
  pipe(input) {
    const call = context.current(); // now: the call this pipe belongs to
    const site = {};
    Error.captureStackTrace(site, Algorithm.prototype.pipe); // the algorithm's frames, for its errors
    const fail = (err) => {
      err.stack = `${err.name}: ${err.message}\n${site.stack.split('\n').slice(1).join('\n')}`;
      return err;
    };
    return new Promise((resolve, reject) => {
      let body;
      try {
        body = Buffer.from(wire.CallRequest.encode(wire.CallRequest.create({
          input: wire.encodePayload(input), capture_stdout: this.options.stdout,
        })).finish());
      } catch (e) {
        reject(fail(wire.algomeshError('INVALID_INPUT', `cannot encode the pipe's input: ${e.message}`)));
        return;
      }
      const md = new grpc.Metadata();
      md.set('algomesh-target', this.target);
      for (const [k, v] of (call && call.forward) || []) md.add(k, v);
      let ms = this.options.timeout * 1000;
      if (call && call.deadline) ms = Math.min(ms, call.deadline - Date.now());
      const deadline = new Date(Date.now() + Math.max(ms, 0));
      let outcome = null;
      const rpc = this.client._channel().makeUnaryRequest(CALL_METHOD, identity, identity, body, md, { deadline },
        (err, value) => { outcome = { err, value }; });
      rpc.on('status', (status) => {
        if (!outcome || outcome.err) {
          reject(fail(wire.fromServiceError(outcome ? outcome.err : status)));
          return;
        }
        try {
          resolve(new Response(outcome.value, status.metadata));
        } catch (e) {
          reject(fail(wire.algomeshError('INTERNAL', `bad response from ${this.target}: ${e.message}`)));
        }
      });
    });
  }
}

class Client {
  /** ``address``: the mesh to call; inside an algorithm, $ALGOMESH_ADDRESS (its sidecar). */
  constructor(address) {
    this.address = address || process.env.ALGOMESH_ADDRESS || 'localhost:7700';
    this._grpc = null;
  }

  _channel() {
    if (!this._grpc) {
      this._grpc = new grpc.Client(this.address, grpc.credentials.createInsecure(), wire.CHANNEL_OPTIONS);
    }
    return this._grpc;
  }

  algo(ref) {
    return new Algorithm(this, ref);
  }

  close() {
    if (this._grpc) this._grpc.close();
    this._grpc = null;
  }
}

let shared = null;

/** The client an algorithm uses (its sidecar); another ``address`` gets a client of its own. */
function client(address) {
  if (address) return new Client(address);
  if (!shared) shared = new Client();
  return shared;
}

/** Shorthand for client().algo(ref). */
function algo(ref) {
  return client().algo(ref);
}

module.exports = {
  client, algo, Client, Algorithm, Response,
  json: wire.json, text: wire.text, binary: wire.binary, Payload: wire.Payload,
  AlgomeshError: wire.AlgomeshError,
};
