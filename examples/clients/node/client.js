#!/usr/bin/env node
// Calling algomesh from Node.js (docs/clients.md): algomesh.v1.Mesh/Call on `algomesh up`'s
// public port, and one Registry RPC (ListAlgorithms), with stubs loaded from proto/ by
// @grpc/proto-loader. Errors are decoded from the grpc-status-details-bin trailer
// (google.rpc.Status with a google.rpc.ErrorInfo) with protobufjs.
//
//   node client.js [--address HOST:PORT] [--key API_KEY] [--timeout SECONDS] call TARGET INPUT_JSON
//   node client.js [--address HOST:PORT] [--key API_KEY] list
//
// --address defaults to $ALGOMESH_ADDRESS, then localhost:7700; --key to $ALGOMESH_API_KEY.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

// The contract (the repository's proto/) and the two google.rpc files the errors need.
const PROTO = process.env.ALGOMESH_PROTO || path.join(__dirname, '..', '..', '..', 'proto');
const GOOGLE_RPC = path.join(__dirname, '..', 'proto');

const v1 = grpc.loadPackageDefinition(protoLoader.loadSync(
  ['algomesh/v1/mesh.proto', 'algomesh/v1/registry.proto'],
  { includeDirs: [PROTO], enums: String, longs: Number, defaults: true },
)).algomesh.v1;

const rpcTypes = new protobuf.Root();
// google/protobuf/any.proto is bundled with protobufjs; google/rpc/* come from GOOGLE_RPC.
rpcTypes.resolvePath = (origin, target) => (target.startsWith('google/rpc/') ? path.join(GOOGLE_RPC, target) : target);
rpcTypes.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
const Status = rpcTypes.lookupType('google.rpc.Status');
const ErrorInfo = rpcTypes.lookupType('google.rpc.ErrorInfo');
const DebugInfo = rpcTypes.lookupType('google.rpc.DebugInfo');

// A status without an ErrorInfo (the transport failed, nothing of algomesh answered) maps
// by its code, as the Python SDK does (docs/contract.md, "Errors").
const FALLBACK = {
  [grpc.status.DEADLINE_EXCEEDED]: 'DEADLINE_EXCEEDED',
  [grpc.status.UNAVAILABLE]: 'MESH_UNAVAILABLE',
  [grpc.status.RESOURCE_EXHAUSTED]: 'PAYLOAD_TOO_LARGE',
  [grpc.status.UNAUTHENTICATED]: 'UNAUTHENTICATED',
  [grpc.status.PERMISSION_DENIED]: 'PERMISSION_DENIED',
  [grpc.status.NOT_FOUND]: 'ALGORITHM_NOT_FOUND',
  [grpc.status.INVALID_ARGUMENT]: 'INVALID_INPUT',
};
// As the Python SDK: the transport's ceiling; the mesh's payload limit (10 MiB by default) is policy.
const CHANNEL_OPTIONS = { 'grpc.max_send_message_length': 64 << 20, 'grpc.max_receive_message_length': 64 << 20 };
const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, code]) => [code, name]));

function usage(message) {
  if (message) console.error(`client.js: ${message}`);
  console.error('usage: client.js [--address HOST:PORT] [--key API_KEY] [--timeout SECONDS] call TARGET INPUT_JSON\n'
    + '       client.js [--address HOST:PORT] [--key API_KEY] list');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    address: process.env.ALGOMESH_ADDRESS || 'localhost:7700',
    key: process.env.ALGOMESH_API_KEY || '',
    timeout: 300,
    rest: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--address' || flag === '--key' || flag === '--timeout') {
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      opts[flag.slice(2)] = argv[++i];
    } else if (flag === '-h' || flag === '--help') {
      usage();
    } else {
      opts.rest.push(flag);
    }
  }
  opts.timeout = Number(opts.timeout);
  if (!(opts.timeout > 0)) usage('--timeout must be a positive number of seconds');
  return opts;
}

function metadataFor(opts, target) {
  const md = new grpc.Metadata();
  if (opts.key) md.set('authorization', `Simple ${opts.key}`);
  if (target) md.set('algomesh-target', target);
  return md;
}

function deadline(opts) {
  return new Date(Date.now() + opts.timeout * 1000);
}

/** The typed error: reason, metadata and stack trace from grpc-status-details-bin. */
function describeError(err) {
  const out = { reason: '', code: CODE_NAMES[err.code] || String(err.code), message: err.details || '', metadata: {}, stack: '' };
  const raw = err.metadata ? err.metadata.get('grpc-status-details-bin')[0] : undefined;
  if (raw) {
    const status = Status.decode(raw);
    if (status.message) out.message = status.message;
    for (const any of status.details) {
      if (any.type_url === 'type.googleapis.com/google.rpc.ErrorInfo') {
        const info = ErrorInfo.decode(any.value);
        if (info.domain === 'algomesh') {
          out.reason = info.reason;
          out.metadata = info.metadata || {};
        }
      } else if (any.type_url === 'type.googleapis.com/google.rpc.DebugInfo') {
        out.stack = DebugInfo.decode(any.value).detail;
      }
    }
  }
  if (!out.reason) out.reason = FALLBACK[err.code] || 'INTERNAL';
  return out;
}

function printError(err) {
  const e = describeError(err);
  console.error(`error: ${e.reason} (gRPC ${e.code}): ${e.message}`);
  for (const key of Object.keys(e.metadata).sort()) console.error(`  ${key}: ${e.metadata[key]}`);
  if (e.stack) console.error(`stack trace:\n${e.stack.trimEnd().replace(/^/gm, '  ')}`);
  if (e.metadata.trace_id) console.log(`trace-id: ${e.metadata.trace_id}`);
  process.exitCode = 1;
}

function printPayload(payload) {
  const data = Buffer.from(payload ? payload.data : []);
  switch (payload ? payload.contentType : 'CONTENT_TYPE_UNSPECIFIED') {
    case 'CONTENT_TYPE_JSON':
      console.log(`result (json): ${JSON.stringify(JSON.parse(data.toString('utf8')))}`);
      break;
    case 'CONTENT_TYPE_TEXT':
      console.log(`result (text): ${data.toString('utf8')}`);
      break;
    default:
      console.log(`result (binary, ${data.length} bytes): ${data.toString('base64')}`);
  }
}

function call(opts, target, inputJson) {
  try {
    JSON.parse(inputJson);
  } catch (e) {
    usage(`INPUT_JSON is not JSON (${e.message}); a text input is a JSON string, e.g. '"hello"'`);
  }
  const mesh = new v1.Mesh(opts.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  const request = { input: { contentType: 'CONTENT_TYPE_JSON', data: Buffer.from(inputJson, 'utf8') } };
  let response = null;
  let failure = null;
  const rpc = mesh.Call(request, metadataFor(opts, target), { deadline: deadline(opts) }, (err, res) => {
    failure = err;
    response = res;
  });
  // 'status' comes after the callback, with the trailers (also on success).
  rpc.on('status', (status) => {
    if (failure) {
      printError(failure);
    } else {
      const trailers = status.metadata;
      printPayload(response.output);
      const algorithm = trailers.get('algomesh-algorithm')[0] || '';
      const version = trailers.get('algomesh-version')[0] || '';
      console.log(`algorithm: ${algorithm} ${version}`);
      console.log(`trace-id: ${trailers.get('algomesh-trace-id')[0] || ''}`);
    }
    mesh.close();
  });
}

function list(opts) {
  const registry = new v1.Registry(opts.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  registry.ListAlgorithms({}, metadataFor(opts, null), { deadline: deadline(opts) }, (err, res) => {
    if (err) {
      printError(err);
    } else {
      for (const a of res.algorithms) console.log(`${a.name}  ${a.latestVersion}  ${a.description}`);
    }
    registry.close();
  });
}

const opts = parseArgs(process.argv.slice(2));
const [command, ...args] = opts.rest;
if (command === 'call' && args.length === 2) call(opts, args[0], args[1]);
else if (command === 'list' && args.length === 0) list(opts);
else usage(command ? `bad arguments for ${command}` : 'no command');
