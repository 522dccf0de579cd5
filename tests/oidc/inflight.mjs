// Issue 17: what a provider under a refresh storm sees. Counts the token endpoint requests in
// flight (from arrival until the answer is sent) and remembers the most at once, so a test can
// check token-handler's `max_concurrent_calls` from the provider's side. With `tokenDelayMs`
// (OIDC_CONFIG) every token answer is held back that long, as a loaded provider would, so calls
// overlap whatever the machine's speed.
//
//   GET  /test/inflight        {"current", "max", "requests"}
//   POST /test/inflight/reset  zeroes max and requests (current is live)

let current = 0;
let max = 0;
let requests = 0;

// Serves the two test routes and tracks token requests; true when the request was answered.
export function handleInFlight(req, res, path, delayMs) {
  if (path === '/test/inflight' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify({ current, max, requests }));
    return true;
  }
  if (path === '/test/inflight/reset' && req.method === 'POST') {
    max = current;
    requests = 0;
    res.writeHead(204, { 'cache-control': 'no-store' });
    res.end();
    return true;
  }
  if (path === '/token' && req.method === 'POST') {
    current += 1;
    requests += 1;
    if (current > max) max = current;
    let done = false;
    const finish = () => { if (!done) { done = true; current -= 1; } };
    res.on('finish', finish);
    res.on('close', finish);
    if (delayMs > 0) {
      const end = res.end.bind(res);
      res.end = (...args) => { setTimeout(() => end(...args), delayMs); return res; };
    }
  }
  return false;
}
