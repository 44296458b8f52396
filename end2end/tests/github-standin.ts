// A local stand-in for GitHub's OAuth web flow and the two REST endpoints Stagely reads after it
// (`/user`, `/user/orgs`), so Playwright can sign in for real without the network. It checks
// what GitHub checks — client credentials, single-use codes, the redirect_uri and PKCE (S256) —
// so a bug in Stagely's half of the flow fails the test instead of passing against a mock.
//
// Like api.github.com, `/user` and `/user/orgs` refuse a request without a User-Agent (403).
// Deliberate differences from github.com: everything is on one origin (no api.github.com),
// token errors are HTTP 400 (GitHub answers them with 200), and state, PKCE and redirect_uri
// are mandatory here because Stagely must always send them.

import { createHash, randomBytes } from 'node:crypto';
import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import { URL, URLSearchParams } from 'node:url';

export interface GitHubUser {
  id: number;
  login: string;
  name?: string;
}

export interface StandIn {
  /** Base URL, e.g. `http://127.0.0.1:41234`; use it for both the OAuth and the API base. */
  url: string;
  close(): Promise<void>;
  /** How many times `/login/oauth/access_token` was called, successful or not. */
  tokenRequests: number;
}

interface Options {
  clientId: string;
  clientSecret: string;
  user: GitHubUser;
  orgs?: string[];
}

/** What an approval remembers until its code is exchanged. */
interface Grant {
  clientId: string;
  redirectUri: string;
  codeChallenge: string;
}

/** The parameters of `/login/oauth/authorize`, checked; approval re-reads them from its query. */
interface AuthorizeRequest {
  clientId: string;
  /** As sent: the token request must repeat it byte for byte, as on GitHub. */
  redirectUri: string;
  state: string;
  codeChallenge: string;
  scope: string;
}

class HttpError extends Error {
  constructor(readonly status: number, readonly body: object) {
    super(JSON.stringify(body));
  }
}

export async function startGitHub(options: Options): Promise<StandIn> {
  const codes = new Map<string, Grant>();
  const tokens = new Set<string>();

  const server = createServer((request, response) => {
    route(request, response).catch((error: unknown) => {
      if (error instanceof HttpError) {
        sendJson(response, error.status, error.body);
      } else {
        sendText(response, 500, `github stand-in: ${String(error)}`);
      }
    });
  });

  const standIn: StandIn = {
    url: '',
    tokenRequests: 0,
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        // A browser keeps idle keep-alive sockets open, which would hold close() forever.
        server.closeAllConnections();
      }),
  };

  async function route(request: IncomingMessage, response: ServerResponse) {
    const url = new URL(request.url ?? '/', 'http://stand-in');
    const endpoint = `${request.method} ${url.pathname}`;
    switch (endpoint) {
      case 'GET /login/oauth/authorize':
        return authorize(url.searchParams, response);
      case 'GET /login/oauth/approve':
        return approve(url.searchParams, response);
      case 'POST /login/oauth/access_token':
        standIn.tokenRequests += 1;
        return sendJson(response, 200, issueToken(request, await readBody(request)));
      case 'GET /user':
        authenticate(request);
        return sendJson(response, 200, { id: options.user.id, login: options.user.login, name: options.user.name ?? null });
      case 'GET /user/orgs':
        authenticate(request);
        return sendJson(response, 200, (options.orgs ?? []).map((login) => ({ login })));
      default:
        return sendText(response, 404, 'Not Found');
    }
  }

  function authorize(query: URLSearchParams, response: ServerResponse) {
    const checked = checkAuthorize(query, options.clientId);
    if (typeof checked === 'string') return sendText(response, 400, checked);
    const hidden = ['client_id', 'redirect_uri', 'state', 'code_challenge', 'code_challenge_method', 'scope']
      .map((name) => `<input type="hidden" name="${name}" value="${escapeHtml(query.get(name) ?? '')}">`)
      .join('\n      ');
    const page = `<!doctype html>
<html>
  <head><meta charset="utf-8"><title>Authorize Stagely</title></head>
  <body>
    <h1>Authorize Stagely</h1>
    <p>Signed in as <strong>${escapeHtml(options.user.login)}</strong>.</p>
    <p>Stagely wants to read your profile and organisations (${escapeHtml(checked.scope || 'no scope')}).</p>
    <form method="get" action="/login/oauth/approve">
      ${hidden}
      <button type="submit">Authorize</button>
    </form>
  </body>
</html>`;
    sendText(response, 200, page, 'text/html; charset=utf-8');
  }

  function approve(query: URLSearchParams, response: ServerResponse) {
    const checked = checkAuthorize(query, options.clientId);
    if (typeof checked === 'string') return sendText(response, 400, checked);
    const code = randomBytes(10).toString('hex');
    codes.set(code, { clientId: checked.clientId, redirectUri: checked.redirectUri, codeChallenge: checked.codeChallenge });
    // Setting params through URL keeps whatever query the redirect_uri already carries.
    const target = new URL(checked.redirectUri);
    target.searchParams.set('code', code);
    target.searchParams.set('state', checked.state);
    response.writeHead(302, { location: target.href }).end();
  }

  /** Exchanges a code for a token, or throws the `HttpError` GitHub's error code maps to. */
  function issueToken(request: IncomingMessage, form: URLSearchParams): object {
    const basic = basicCredentials(request.headers.authorization);
    const clientId = form.get('client_id') ?? basic?.id;
    const clientSecret = form.get('client_secret') ?? basic?.secret;
    if (clientId !== options.clientId || clientSecret !== options.clientSecret) {
      throw tokenError('incorrect_client_credentials', 'The client_id and/or client_secret passed are incorrect.');
    }
    const code = form.get('code') ?? '';
    const grant = codes.get(code);
    codes.delete(code); // single use, even when the rest of the request is wrong
    if (!grant || grant.clientId !== clientId) {
      throw tokenError('bad_verification_code', 'The code passed is incorrect or expired.');
    }
    const redirectUri = form.get('redirect_uri');
    if (redirectUri !== null && redirectUri !== grant.redirectUri) {
      throw tokenError('redirect_uri_mismatch', 'The redirect_uri MUST match the registered callback URL for this application.');
    }
    const verifier = form.get('code_verifier') ?? '';
    if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier) || s256(verifier) !== grant.codeChallenge) {
      throw tokenError('bad_verification_code', 'The code_verifier does not match the code_challenge.');
    }
    const token = `gho_${randomBytes(18).toString('base64url')}`;
    tokens.add(token);
    return { access_token: token, token_type: 'bearer', scope: 'read:user,read:org' };
  }

  /** Accepts `Authorization: Bearer <token>` or GitHub's older `token <token>`, from a client with a User-Agent. */
  function authenticate(request: IncomingMessage) {
    if (!request.headers['user-agent']) {
      // api.github.com refuses requests without one; an HTTP client that sends none by default
      // (reqwest) must set it, so the stand-in refuses too.
      throw new HttpError(403, { message: 'Request forbidden by administrative rules. Please make sure your request has a User-Agent header' });
    }
    const match = /^(?:bearer|token)\s+(\S+)$/i.exec(request.headers.authorization ?? '');
    if (!match || !tokens.has(match[1])) {
      throw new HttpError(401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' });
    }
  }

  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => done());
  });
  const address = server.address();
  standIn.url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  return standIn;
}

/** Checks authorize/approve parameters; returns the reason as text when GitHub would refuse. */
function checkAuthorize(query: URLSearchParams, knownClientId: string): AuthorizeRequest | string {
  const clientId = query.get('client_id') ?? '';
  if (clientId !== knownClientId) return `unknown client_id ${JSON.stringify(clientId)}`;
  const state = query.get('state');
  if (!state) return 'missing state';
  if (query.get('code_challenge_method') !== 'S256') return 'code_challenge_method must be S256';
  const codeChallenge = query.get('code_challenge');
  if (!codeChallenge) return 'missing code_challenge';
  // The stand-in has no registered callback to fall back on, so redirect_uri is required.
  const redirectUri = query.get('redirect_uri') ?? '';
  if (!isHttpUrl(redirectUri)) return 'redirect_uri must be an absolute http(s) URL';
  return { clientId, redirectUri, state, codeChallenge, scope: query.get('scope') ?? '' };
}

/** Client credentials from HTTP Basic auth, which RFC 6749 §2.3.1 form-encodes before base64. */
function basicCredentials(header: string | undefined): { id: string; secret: string } | null {
  const match = /^basic\s+(\S+)$/i.exec(header ?? '');
  if (!match) return null;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  const formDecode = (part: string) => new URLSearchParams(`v=${part}`).get('v') ?? '';
  return { id: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
}

function isHttpUrl(text: string): boolean {
  try {
    return ['http:', 'https:'].includes(new URL(text).protocol);
  } catch {
    return false;
  }
}

function tokenError(error: string, description: string): HttpError {
  return new HttpError(400, { error, error_description: description });
}

function s256(verifier: string): string {
  return createHash('sha256').update(verifier).digest('base64url');
}

async function readBody(request: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function sendJson(response: ServerResponse, status: number, body: unknown) {
  sendText(response, status, JSON.stringify(body), 'application/json; charset=utf-8');
}

function sendText(response: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8') {
  response.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) }).end(body);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
