'use strict';
// The runner conformance algorithm in Node.js (tests/conformance/README.md).
const algomesh = require('algomesh-runner');

let loads = 0;

exports.load = () => {
  loads += 1;
};

exports.apply = async (input) => {
  if (typeof input === 'string') return input;
  if (Buffer.isBuffer(input)) return Buffer.from(input).reverse();
  if (input === null || typeof input !== 'object' || Array.isArray(input) || !('op' in input)) return input;
  switch (input.op) {
    case 'echo':
      return algomesh.json(input.value);
    case 'text':
      return String(input.value);
    case 'bytes':
      return Buffer.from(input.value, 'utf8');
    case 'loads':
      return loads;
    case 'raise':
      throw new Error(input.message);
    case 'crash':
      process.exit(3);
      break;
    case 'print':
      console.log(input.value);
      return algomesh.json('printed');
    case 'pipe': {
      const response = await algomesh.algo(input.target).pipe(input.input);
      return { via: 'node', result: response.result };
    }
    case 'sleep':
      await new Promise((resolve) => setTimeout(resolve, input.ms));
      return algomesh.json('slept');
    default:
      return input;
  }
};
