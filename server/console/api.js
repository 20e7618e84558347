// Talking to engramd: JSON over fetch, the API key (kept in sessionStorage, asked for on a 401),
// and errors in the API's documented shape.

const KEY = 'engram.apiKey';

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details ?? {};
  }
}

let askForKey = null;
let pendingAsk = null;

/** `fn(reason) → Promise<boolean>`: shows the key prompt; true once a key was entered. */
export function onKeyNeeded(fn) {
  askForKey = fn;
}

export function currentKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** One prompt at a time, however many requests were refused together. */
function promptKey(reason) {
  if (!pendingAsk) {
    pendingAsk = askForKey(reason).finally(() => { pendingAsk = null; });
  }
  return pendingAsk;
}

async function send(method, path, body, accept) {
  const headers = { accept };
  const key = currentKey();
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  try {
    return await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'UNREACHABLE', `engramd did not answer (${e.message}).`);
  }
}

/** A JSON call; resolves to the parsed answer, rejects with an ApiError. */
export async function api(method, path, body) {
  for (;;) {
    const sentKey = currentKey();
    const res = await send(method, path, body, 'application/json');
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (res.status === 401 && askForKey) {
      const reason = sentKey ? 'The key was refused. Enter another one.' : 'This daemon needs an API key.';
      if (currentKey() !== sentKey || await promptKey(reason)) continue;
    }
    if (!res.ok) {
      const e = data?.error ?? {};
      throw new ApiError(res.status, e.code ?? `HTTP_${res.status}`, e.message ?? `${res.status} ${res.statusText}`, e.details);
    }
    return data;
  }
}

/** A plain-text GET (`/metrics`). */
export async function getText(path) {
  const res = await send('GET', path, undefined, 'text/plain');
  if (!res.ok) throw new ApiError(res.status, `HTTP_${res.status}`, `${path} answered ${res.status}`);
  return res.text();
}
