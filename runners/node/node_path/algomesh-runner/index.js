'use strict';
// main.js puts runners/node/node_path on NODE_PATH, so an algorithm's
// require('algomesh-runner') finds this package without installing anything.
module.exports = require('../../index.js');
