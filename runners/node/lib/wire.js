'use strict';
// What travels: algomesh.v1 messages, payloads <-> JS values, and algomesh errors as gRPC
// statuses (grpc-status-details-bin = google.rpc.Status{ErrorInfo, DebugInfo}), as in
// docs/contract.md. Shared by the runner (main.js) and the pipe client (index.js).
const fs = require('fs');
const path = require('path');
const protobuf = require('protobufjs');
const protoLoader = require('@grpc/proto-loader');
const grpc = require('@grpc/grpc-js');

// The repo's proto/ (runners/node/../../proto), then this package's google.rpc subset.
const PROTO_DIRS = [path.resolve(__dirname, '..', '..', '..', 'proto'), path.resolve(__dirname, '..', 'proto')];

function resolveProto(origin, target) {
  for (const dir of PROTO_DIRS) {
    const file = path.join(dir, target);
    if (fs.existsSync(file)) return file;
  }
  return target; // google/protobuf/*.proto: protobufjs's bundled definitions
}

const root = new protobuf.Root();
root.resolvePath = resolveProto;
root.loadSync(['algomesh/v1/payload.proto', 'google/rpc/status.proto', 'google/rpc/error_details.proto'],
  { keepCase: true });
const CallRequest = root.lookupType('algomesh.v1.CallRequest');
const CallResponse = root.lookupType('algomesh.v1.CallResponse');
const Status = root.lookupType('google.rpc.Status');
const ErrorInfo = root.lookupType('google.rpc.ErrorInfo');
const DebugInfo = root.lookupType('google.rpc.DebugInfo');

// Service definitions (Runner, served; Mesh, called) from the same files.
const services = protoLoader.loadSync(['algomesh/v1/runner.proto', 'algomesh/v1/mesh.proto'], {
  includeDirs: [PROTO_DIRS[0]], keepCase: true, longs: String, enums: Number, defaults: true,
});

const MAX_MESSAGE_BYTES = 64 * 1024 * 1024; // the transport's ceiling, both ways
const CHANNEL_OPTIONS = {
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.enable_retries': 0,
};

const CONTENT_TYPE = { UNSPECIFIED: 0, JSON: 1, TEXT: 2, BINARY: 3, DATA_REF: 4 };
const CONTENT_TYPE_NAMES = { 1: 'json', 2: 'text', 3: 'binary' };

// ---------------------------------------------------------------------------- payloads

/** A value with its content type spelled out: what apply returns to choose the type
 * (algomesh.json("a string") is JSON, not TEXT). */
class Payload {
  constructor(contentType, value) {
    if (!['json', 'text', 'binary'].includes(contentType)) {
      throw new TypeError(`content type must be json, text or binary, not ${contentType}`);
    }
    this.contentType = contentType;
    this.value = value;
  }
}

const json = (value) => new Payload('json', value);
const text = (value) => new Payload('text', String(value));
const binary = (value) => new Payload('binary', value);

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Payload message -> JS value: JSON -> values, TEXT -> string, BINARY -> Buffer.
 * Throws an AlgomeshError(INVALID_INPUT) for malformed JSON or non-UTF-8 text. */
function decodePayload(payload) {
  const ct = payload ? payload.content_type : 0;
  const data = payload && payload.data ? Buffer.from(payload.data.buffer, payload.data.byteOffset, payload.data.length)
    : Buffer.alloc(0);
  if (ct === CONTENT_TYPE.BINARY) return data;
  if (ct !== CONTENT_TYPE.JSON && ct !== CONTENT_TYPE.TEXT) {
    throw algomeshError('INVALID_INPUT', `unsupported content type ${ct}`);
  }
  let str;
  try {
    str = strictUtf8.decode(data);
  } catch (e) {
    throw algomeshError('INVALID_INPUT', `${CONTENT_TYPE_NAMES[ct]} payload is not UTF-8: ${e.message}`);
  }
  if (ct === CONTENT_TYPE.TEXT) return str;
  try {
    return JSON.parse(str);
  } catch (e) {
    throw algomeshError('INVALID_INPUT', `payload declared JSON is not valid JSON: ${e.message}`);
  }
}

function jsonBytes(value) {
  const s = JSON.stringify(value === undefined ? null : value);
  if (s === undefined) throw new TypeError(`a ${typeof value} is not a JSON value`);
  return Buffer.from(s, 'utf8');
}

function toBuffer(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`binary output must be a Buffer, Uint8Array or ArrayBuffer, not ${typeof value}`);
}

/** JS value -> Payload message: string -> TEXT, Buffer/Uint8Array/ArrayBuffer -> BINARY,
 * a Payload as it says, anything else -> JSON. Throws TypeError for unencodable values. */
function encodePayload(value) {
  if (value instanceof Payload) {
    if (value.contentType === 'json') return { content_type: CONTENT_TYPE.JSON, data: jsonBytes(value.value) };
    if (value.contentType === 'text') return { content_type: CONTENT_TYPE.TEXT, data: Buffer.from(value.value, 'utf8') };
    return { content_type: CONTENT_TYPE.BINARY, data: toBuffer(value.value) };
  }
  if (typeof value === 'string') return { content_type: CONTENT_TYPE.TEXT, data: Buffer.from(value, 'utf8') };
  if (Buffer.isBuffer(value) || value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
    return { content_type: CONTENT_TYPE.BINARY, data: toBuffer(value) };
  }
  return { content_type: CONTENT_TYPE.JSON, data: jsonBytes(value) };
}

// ---------------------------------------------------------------------------- errors

const CODE = grpc.status;
// reason -> gRPC code, for the reasons this package raises (sdk/_errors.py REASONS is the table).
const REASON_CODES = {
  ALGORITHM_ERROR: CODE.UNKNOWN,
  ALGORITHM_LOAD_FAILED: CODE.FAILED_PRECONDITION,
  INVALID_INPUT: CODE.INVALID_ARGUMENT,
  INVALID_TARGET: CODE.INVALID_ARGUMENT,
  DEADLINE_EXCEEDED: CODE.DEADLINE_EXCEEDED,
  MESH_UNAVAILABLE: CODE.UNAVAILABLE,
  INTERNAL: CODE.INTERNAL,
};
// A status that arrives without an ErrorInfo (a transport failure) maps by its code.
const CODE_FALLBACK = {
  [CODE.DEADLINE_EXCEEDED]: 'DEADLINE_EXCEEDED',
  [CODE.UNAVAILABLE]: 'MESH_UNAVAILABLE',
  [CODE.RESOURCE_EXHAUSTED]: 'PAYLOAD_TOO_LARGE',
  [CODE.UNAUTHENTICATED]: 'UNAUTHENTICATED',
  [CODE.PERMISSION_DENIED]: 'PERMISSION_DENIED',
  [CODE.NOT_FOUND]: 'ALGORITHM_NOT_FOUND',
  [CODE.INVALID_ARGUMENT]: 'INVALID_INPUT',
};

const DOMAIN = 'algomesh';
const DETAILS_KEY = 'grpc-status-details-bin';
const ERROR_INFO_URL = 'type.googleapis.com/google.rpc.ErrorInfo';
const DEBUG_INFO_URL = 'type.googleapis.com/google.rpc.DebugInfo';
// Trailers are capped at 8 KiB: cut as sdk/_errors.py does (UTF-8 bytes).
const MESSAGE_BYTES = 512;
const STACK_BYTES = 2560;
const META_BYTES = 160;

function cut(str, limit, tail = false) {
  const raw = Buffer.from(String(str), 'utf8');
  if (raw.length <= limit) return String(str);
  // Dropping a partial UTF-8 sequence at the cut: TextDecoder (non-fatal) would make it U+FFFD.
  if (tail) {
    let start = raw.length - limit;
    while (start < raw.length && (raw[start] & 0xc0) === 0x80) start++;
    return '…(cut)\n' + raw.subarray(start).toString('utf8');
  }
  let end = limit;
  while (end > 0 && (raw[end] & 0xc0) === 0x80) end--;
  return raw.subarray(0, end).toString('utf8') + '…(cut)';
}

/** An algomesh error: a gRPC status with a stable reason. A pipe that fails throws one,
 * holding the status exactly as it came (code, message, grpc-status-details-bin); apply
 * letting it escape answers the caller with that status. */
class AlgomeshError extends Error {
  constructor(reason, message, { code, metadata, stacktrace, details } = {}) {
    super(message);
    this.name = 'AlgomeshError';
    this.reason = reason;
    this.code = code !== undefined ? code : (REASON_CODES[reason] !== undefined ? REASON_CODES[reason] : CODE.UNKNOWN);
    this.metadata = metadata || {};      // ErrorInfo.metadata (algorithm, version, error_type, ...)
    this.stacktrace = stacktrace || '';  // DebugInfo.detail: the failing algorithm's stack trace
    this.details = details || null;      // the status's serialized google.rpc.Status, as received
  }
}

function algomeshError(reason, message, opts) {
  return new AlgomeshError(reason, message, opts);
}

function anyOf(url, type, fields) {
  return { type_url: url, value: Buffer.from(type.encode(type.create(fields)).finish()) };
}

/** The google.rpc.Status bytes for an error built here. */
function statusBytes(err) {
  const metadata = {};
  for (const [k, v] of Object.entries(err.metadata || {})) metadata[cut(k, 64)] = cut(v, META_BYTES);
  const details = [anyOf(ERROR_INFO_URL, ErrorInfo, { reason: err.reason, domain: DOMAIN, metadata })];
  if (err.stacktrace) details.push(anyOf(DEBUG_INFO_URL, DebugInfo, { detail: cut(err.stacktrace, STACK_BYTES, true) }));
  return Buffer.from(Status.encode(Status.create({ code: err.code, message: cut(err.message, MESSAGE_BYTES), details })).finish());
}

/** For a grpc-js callback: {code, details, metadata} with grpc-status-details-bin. A pipe's
 * error goes back as it came; ``stacktrace`` is added only where the status carries none. */
function toServiceError(err, stacktrace) {
  let bytes;
  if (err.details) {
    bytes = err.details;
    if (stacktrace) {
      const status = Status.decode(bytes);
      if (!status.details.some((d) => d.type_url === DEBUG_INFO_URL)) {
        status.details.push(anyOf(DEBUG_INFO_URL, DebugInfo, { detail: cut(stacktrace, STACK_BYTES, true) }));
        bytes = Buffer.from(Status.encode(status).finish());
      }
    }
  } else {
    if (stacktrace && !err.stacktrace) err.stacktrace = stacktrace;
    bytes = statusBytes(err);
  }
  const md = new grpc.Metadata();
  md.set(DETAILS_KEY, bytes);
  return { code: err.code, details: cut(err.message, MESSAGE_BYTES), metadata: md };
}

/** A grpc-js ServiceError (a failed pipe) -> AlgomeshError keeping the status's bytes. */
function fromServiceError(e) {
  const raw = e.metadata ? e.metadata.get(DETAILS_KEY)[0] : undefined;
  if (Buffer.isBuffer(raw)) {
    try {
      const status = Status.decode(raw);
      let reason = null;
      let metadata = {};
      let stacktrace = '';
      for (const any of status.details) {
        if (any.type_url === ERROR_INFO_URL) {
          const info = ErrorInfo.decode(any.value);
          if (info.domain === DOMAIN) {
            reason = info.reason;
            metadata = { ...info.metadata };
          }
        } else if (any.type_url === DEBUG_INFO_URL) {
          stacktrace = DebugInfo.decode(any.value).detail;
        }
      }
      if (reason) {
        return new AlgomeshError(reason, status.message || e.details || '', {
          code: e.code, metadata, stacktrace, details: Buffer.from(raw),
        });
      }
    } catch (_) { /* a foreign server's garbage: fall through to the code */ }
  }
  const reason = CODE_FALLBACK[e.code] || 'INTERNAL';
  let message = e.details || `gRPC status ${e.code}`;
  if (e.code === CODE.UNAVAILABLE) message = `cannot reach the mesh: ${message}`;
  else if (e.code === CODE.DEADLINE_EXCEEDED) message = `no answer within the call's timeout (${message})`;
  const codeName = Object.keys(CODE).find((k) => CODE[k] === e.code) || String(e.code);
  return new AlgomeshError(reason, message, { code: reason === 'INTERNAL' ? CODE.INTERNAL : e.code,
    metadata: { grpc_code: codeName } });
}

module.exports = {
  grpc, services, CallRequest, CallResponse, Status, ErrorInfo, DebugInfo,
  CHANNEL_OPTIONS, MAX_MESSAGE_BYTES, CONTENT_TYPE, CONTENT_TYPE_NAMES,
  Payload, json, text, binary, decodePayload, encodePayload,
  AlgomeshError, algomeshError, toServiceError, fromServiceError, cut, DETAILS_KEY,
};
