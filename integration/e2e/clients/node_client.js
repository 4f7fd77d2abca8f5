// Node clients that find the proxy only through the environment `egress-proxy run` sets.
//
//   node node_client.js http  URL          absolute-form GET via $http_proxy / $HTTP_PROXY
//   node node_client.js https URL CAFILE   CONNECT via $https_proxy / $HTTPS_PROXY, then TLS
//   node node_client.js grpc  AUTHORITY    HTTP/2 (h2c) gRPC-style unary call tunnelled through
//                                          CONNECT to $grpc_proxy / $GRPC_PROXY, as grpc-core does
//   node node_client.js fetch URL          global fetch(); only proxied when the runtime honours
//                                          NODE_USE_ENV_PROXY=1 (Node >= 24 / 22.21)
//
// The proxy URL's `user:password@` goes out as `Proxy-Authorization: Basic`, as proxy agents
// do; with E2E_IGNORE_PROXY_CREDENTIALS=1 it is left out, as by a client that cannot send
// proxy credentials.
//
// Prints `status=`, `x-proxy-reason=`, `body=` (or `error=`) lines. Exit: 0 on success, 1 on a
// refusal by the proxy or a non-200 status, 2 on any other error, 3 on the overall deadline.
'use strict';

const fs = require('fs');
const http = require('http');
const http2 = require('http2');
const tls = require('tls');

const [mode, target, cafile] = process.argv.slice(2);
const deadline = setTimeout(() => {
  console.log('error=deadline expired');
  process.exit(3);
}, 15000);

function done(code) {
  clearTimeout(deadline);
  process.exit(code);
}

function fail(err) {
  console.log(`error=${err && err.message ? err.message : err}`);
  if (err && err.cause) console.log(`cause=${err.cause.code || err.cause.message || err.cause}`);
  done(err && err.refused ? 1 : 2);
}

function show(status, headers, body) {
  console.log(`status=${status}`);
  console.log(`x-proxy-reason=${headers['x-proxy-reason'] || ''}`);
  console.log(`x-proxy-error=${headers['x-proxy-error'] || ''}`);
  console.log(`body=${String(body).trim()}`);
  done(status === 200 ? 0 : 1);
}

function proxyFromEnv(names) {
  for (const name of names) {
    if (process.env[name]) {
      console.log(`proxy=${name}=${process.env[name]}`);
      return new URL(process.env[name]);
    }
  }
  throw new Error(`none of ${names.join(' ')} is set`);
}

// The Proxy-Authorization header for the credentials in `proxy` (a URL), if any.
function proxyAuth(proxy) {
  if (!proxy.username || process.env.E2E_IGNORE_PROXY_CREDENTIALS === '1') return {};
  const pair = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
  return { 'proxy-authorization': `Basic ${Buffer.from(pair).toString('base64')}` };
}

function collect(res, then) {
  const chunks = [];
  res.on('data', (c) => chunks.push(c));
  res.on('end', () => then(Buffer.concat(chunks).toString()));
  res.on('error', fail);
}

// A CONNECT tunnel to `authority`; rejects with the proxy's reason when it refuses.
function tunnel(proxy, authority) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: proxy.hostname,
      port: proxy.port,
      method: 'CONNECT',
      path: authority,
      headers: { host: authority, ...proxyAuth(proxy) },
    });
    req.on('connect', (res, socket, head) => {
      // Bytes the origin sent right behind the proxy's 200 (an h2 server's SETTINGS) can
      // arrive in the same read as the answer: give them back to the socket, or HTTP/2
      // fails with "Protocol error" whenever the two coalesce.
      if (head && head.length) socket.unshift(head);
      if (res.statusCode === 200) return resolve(socket);
      socket.destroy();
      console.log(`status=${res.statusCode}`);
      console.log(`x-proxy-reason=${res.headers['x-proxy-reason'] || ''}`);
      console.log(`x-proxy-error=${res.headers['x-proxy-error'] || ''}`);
      const err = new Error(`CONNECT ${authority} refused: ${res.statusCode}`);
      err.refused = true;
      reject(err);
    });
    req.on('error', reject);
    req.end();
  });
}

function plainHttp() {
  const proxy = proxyFromEnv(['http_proxy', 'HTTP_PROXY']);
  const url = new URL(target);
  const req = http.request(
    {
      host: proxy.hostname,
      port: proxy.port,
      method: 'GET',
      path: url.href,
      headers: { host: url.host, ...proxyAuth(proxy) },
    },
    (res) => collect(res, (body) => show(res.statusCode, res.headers, body)),
  );
  req.on('error', fail);
  req.end();
}

async function overConnect() {
  const proxy = proxyFromEnv(['https_proxy', 'HTTPS_PROXY']);
  const url = new URL(target);
  const socket = await tunnel(proxy, `${url.hostname}:${url.port || 443}`);
  const secure = tls.connect({ socket, servername: url.hostname, ca: fs.readFileSync(cafile) });
  const req = http.request(
    { createConnection: () => secure, path: url.pathname, headers: { host: url.host } },
    (res) => collect(res, (body) => show(res.statusCode, res.headers, body)),
  );
  req.on('error', fail);
  req.end();
}

async function grpcStyle() {
  console.log(`GRPC_PROXY=${process.env.GRPC_PROXY || ''}`);
  console.log(`grpc_proxy=${process.env.grpc_proxy || ''}`);
  console.log(`HTTP_PROXY=${process.env.HTTP_PROXY || ''}`);
  const proxy = proxyFromEnv(['grpc_proxy', 'GRPC_PROXY']);
  const socket = await tunnel(proxy, target);
  const client = http2.connect(`http://${target}`, { createConnection: () => socket });
  client.on('error', fail);
  const message = Buffer.from('ping through egress-proxy');
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  const req = client.request({
    ':method': 'POST',
    ':path': '/e2e.Echo/Say',
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  let status = 0;
  let trailers = {};
  const chunks = [];
  req.on('response', (headers) => (status = headers[':status']));
  req.on('trailers', (t) => (trailers = t));
  req.on('data', (c) => chunks.push(c));
  req.on('error', fail);
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const reply = body.length >= 5 ? body.subarray(5, 5 + body.readUInt32BE(1)).toString() : '';
    console.log(`status=${status}`);
    console.log(`grpc-status=${trailers['grpc-status']}`);
    console.log(`body=${reply}`);
    client.close();
    done(status === 200 && trailers['grpc-status'] === '0' ? 0 : 1);
  });
  req.end(frame);
}

async function viaFetch() {
  console.log(`NODE_USE_ENV_PROXY=${process.env.NODE_USE_ENV_PROXY || ''}`);
  const res = await fetch(target, { redirect: 'manual' });
  const headers = Object.fromEntries(res.headers.entries());
  show(res.status, headers, await res.text());
}

const modes = { http: plainHttp, https: overConnect, grpc: grpcStyle, fetch: viaFetch };
if (!modes[mode]) {
  console.log(`error=unknown mode ${mode}`);
  done(2);
}
Promise.resolve()
  .then(() => modes[mode]())
  .catch(fail);
