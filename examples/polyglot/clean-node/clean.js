'use strict';
// poly/clean-node, stage 1 of examples/polyglot (Node.js): text in; a record out to the
// next stage, poly/tokenize-go, piped from inside the algorithm. Answers with whatever the
// rest of the pipeline answers (the final record, made by poly/format-cpp).
const algomesh = require('algomesh-runner');

const NEXT = 'poly/tokenize-go';
const ENTITIES = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#39;': "'", '&apos;': "'", '&nbsp;': ' ' };

function clean(text) {
  const removed = { urls: 0, mentions: 0, hashtags: 0 };
  let s = text.replace(/&(amp|lt|gt|quot|#39|apos|nbsp);/g, (m) => ENTITIES[m]);
  s = s.replace(/\b(?:https?:\/\/|www\.)\S+/gi, () => { removed.urls += 1; return ' '; });
  s = s.replace(/(^|[^\w@])@\w+/gu, (m, before) => { removed.mentions += 1; return `${before} `; });
  s = s.replace(/(^|[^\w&#])#(\p{L}[\p{L}\p{N}_]*)/gu, (m, before, tag) => { removed.hashtags += 1; return `${before}${tag}`; });
  s = s.replace(/\s+/gu, ' ').trim();
  return { clean: s, removed };
}

exports.apply = async (input) => {
  const text = typeof input === 'string' ? input : input && typeof input.text === 'string' ? input.text : null;
  if (text === null) throw new TypeError('poly/clean-node takes a text, or JSON {"text": "..."}');
  const record = {
    text,
    ...clean(text),
    stages: [`${process.env.ALGOMESH_ALGORITHM}@${process.env.ALGOMESH_VERSION} (node ${process.version})`],
  };
  const response = await algomesh.algo(NEXT).pipe(record); // an error downstream is thrown on as it came
  return response.result;
};

// For trying the cleaning alone: node -e "console.log(require('./clean.js').clean('...'))"
exports.clean = clean;
