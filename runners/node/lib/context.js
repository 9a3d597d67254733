'use strict';
// The call an apply is serving, per async context (AsyncLocalStorage): the headers its
// pipes forward (algomesh-call, traceparent, tracestate), its deadline, and the buffer
// its output goes to when the caller asked for it. Empty outside an apply.
const { AsyncLocalStorage } = require('async_hooks');

const FORWARDED = ['algomesh-call', 'traceparent', 'tracestate'];
const calls = new AsyncLocalStorage();

/** { forward: [[key, value], ...], deadline: ms since the epoch or null, out: string[] or null } */
function current() {
  return calls.getStore();
}

module.exports = { calls, current, FORWARDED };
