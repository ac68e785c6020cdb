// The HTTP API as the pages use it: same-origin fetch with the session cookie,
// the CSRF token on unsafe methods, errors as ApiError with the API's code.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

let csrf = '';

export function setCsrf(token) {
  csrf = token || '';
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

// Returns the parsed JSON body (null for 204), or the raw Response when
// opts.raw is set; throws ApiError for any non-2xx answer.
export async function api(method, path, body, opts = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (UNSAFE.has(method) && csrf) headers['X-CSRF-Token'] = csrf;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      signal: opts.signal,
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'the appliance cannot be reached');
  }
  if (!res.ok) {
    let code = 'http_' + res.status;
    let msg = res.statusText;
    try {
      const j = await res.json();
      if (j && j.error) {
        code = j.error.code || code;
        msg = j.error.message || msg;
      }
    } catch (e) {
      // not a JSON error body: keep the status
    }
    throw new ApiError(res.status, code, msg);
  }
  if (opts.raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

// The logged-in user and CSRF token, or null when the cookie names no session.
export async function currentSession() {
  const s = await api('GET', '/api/auth/session');
  if (!s.user) return null;
  setCsrf(s.csrf_token);
  return s;
}

export async function login(username, password) {
  const s = await api('POST', '/api/auth/login', { username, password });
  setCsrf(s.csrf_token);
  return s;
}

export async function logout() {
  try {
    await api('POST', '/api/auth/logout', {});
  } finally {
    setCsrf('');
  }
}
