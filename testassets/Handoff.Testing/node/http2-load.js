// A constant HTTP/2 load from Node.js's http2 module (nghttp2 underneath, as in curl, h2load and
// nghttpx), for the integration tests and the benchmark: a client nobody on this project wrote.
//
//   node http2-load.js --port P [--tls] [--connections 32] [--in-flight 1] [--path /]
//
// Each connection keeps --in-flight requests running and sends the next one as soon as one
// ends; after a GOAWAY (or a close) it opens a new connection, as a browser or a gRPC channel
// does. Nothing is retried: every stream that ends without a complete 200 response is a
// failure, refused streams (NGHTTP2_REFUSED_STREAM, which nghttp2 also gives a request it had
// queued but not sent when a GOAWAY arrived) included. Prints "progress <ok> <failed>" every
// 50 ms and "failure <reason>" as they happen; on "stop" (or end of stdin) it opens nothing new,
// waits for what is in flight (at most 30 s) and prints "done <json>".
'use strict';
const http2 = require('http2');

const options = { port: 0, tls: false, connections: 32, inFlight: 1, path: '/' };
for (let i = 2; i < process.argv.length; i++) {
  const name = process.argv[i];
  if (name === '--tls') options.tls = true;
  else if (name === '--port') options.port = Number(process.argv[++i]);
  else if (name === '--connections') options.connections = Number(process.argv[++i]);
  else if (name === '--in-flight') options.inFlight = Number(process.argv[++i]);
  else if (name === '--path') options.path = process.argv[++i];
  else { console.error(`unknown option ${name}`); process.exit(2); }
}
if (!options.port) { console.error('--port is required'); process.exit(2); }

const authority = `${options.tls ? 'https' : 'http'}://127.0.0.1:${options.port}`;
let ok = 0, failed = 0, sessions = 0, goaways = 0, running = 0, stopping = false;
const pids = new Set();

function fail(reason) {
  failed++;
  process.stdout.write(`failure ${new Date().toISOString()} ${reason}\n`);
}

function connect() {
  if (stopping) return;
  sessions++;
  const session = http2.connect(authority, options.tls ? { rejectUnauthorized: false } : {});
  let replaced = false;
  const replace = () => {
    if (!replaced) {
      replaced = true;
      connect();
    }
  };
  session.on('error', e => fail(`session: ${e.code || ''} ${e.message}`));
  session.on('goaway', () => { goaways++; replace(); });
  session.on('close', replace);
  session.on('connect', () => {
    for (let k = 0; k < options.inFlight; k++) send(session);
  });
}

function send(session) {
  if (stopping || session.closed || session.destroyed) return;
  let request;
  try {
    request = session.request({ ':path': options.path });
  } catch (e) {
    // The session learned of a GOAWAY first: no stream was opened, so nothing failed.
    if (e.code === 'ERR_HTTP2_GOAWAY_SESSION' || e.code === 'ERR_HTTP2_INVALID_SESSION') return;
    fail(`request: ${e.code || ''} ${e.message}`);
    return;
  }
  running++;
  let status = 0, body = '', done = false;
  const end = outcome => {
    if (done) return;
    done = true;
    running--;
    if (outcome) fail(`stream ${request.id}: ${outcome}`);
    else {
      ok++;
      const pid = /pid:(\d+)/.exec(body);
      if (pid) pids.add(Number(pid[1]));
    }
    if (running === 0 && stopping) finish();
    // The next request at once, as a client that has more to send does.
    send(session);
  };
  request.setEncoding('utf8');
  request.on('response', headers => { status = headers[':status']; });
  request.on('data', d => { body += d; });
  request.on('end', () => end(status === 200 ? null : `status ${status}`));
  request.on('error', e => end(`${e.code || ''} ${e.message}`));
  request.on('close', () => { if (!done) end(`closed with code ${request.rstCode}`); });
  request.end();
}

let finished = false;
function finish() {
  if (finished) return;
  finished = true;
  clearInterval(progress);
  process.stdout.write(`progress ${ok} ${failed}\n`);
  process.stdout.write(`done ${JSON.stringify({ ok, failed, sessions, goaways, pids: [...pids] })}\n`);
  process.exit(0);
}

function stop() {
  if (stopping) return;
  stopping = true;
  if (running === 0) finish();
  setTimeout(() => { fail(`${running} streams still running 30 s after stop`); finish(); }, 30000).unref();
}

const progress = setInterval(() => process.stdout.write(`progress ${ok} ${failed}\n`), 50);
process.stdin.setEncoding('utf8');
process.stdin.on('data', d => { if (d.includes('stop')) stop(); });
process.stdin.on('end', stop);
for (let i = 0; i < options.connections; i++) connect();
