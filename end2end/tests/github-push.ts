// A `push` webhook delivery exactly as GitHub sends one: its headers (`X-GitHub-Event`,
// `X-GitHub-Delivery`, `X-Hub-Signature-256` = HMAC-SHA256 of the raw body with the hook's
// secret) and the payload's shape.

import { createHmac, randomUUID } from 'node:crypto';

export interface Push {
  /** The commit the branch now points at. */
  after: string;
  /** Where it pointed before; forty ones when not given. */
  before?: string;
  /** The head commit's message. */
  message: string;
  /** The delivery id; a fresh one when not given. */
  delivery?: string;
}

/** Posts the delivery of `push` to `main` to `url`, signed with `secret`. */
export function githubPush(url: string, secret: string, push: Push) {
  const before = push.before ?? '1'.repeat(40);
  const { after, message } = push;
  const mona = { name: 'Mona Octocat', email: 'mona@example.com', username: 'octocat' };
  const body = JSON.stringify({
    ref: 'refs/heads/main',
    before,
    after,
    created: false,
    deleted: false,
    forced: false,
    compare: `https://github.com/octo-org/shop/compare/${before.slice(0, 12)}...${after.slice(0, 12)}`,
    head_commit: { id: after, message, timestamp: new Date().toISOString(), author: mona, committer: mona },
    commits: [{ id: after, message, distinct: true, author: mona, committer: mona }],
    pusher: { name: 'octocat', email: 'mona@example.com' },
    sender: { login: 'octocat', id: 583231, type: 'User' },
    repository: { id: 1296269, name: 'shop', full_name: 'octo-org/shop', default_branch: 'main', master_branch: 'main' },
  });
  return fetch(url, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'User-Agent': 'GitHub-Hookshot/7b3a1f2',
      'X-GitHub-Event': 'push',
      'X-GitHub-Delivery': push.delivery ?? randomUUID(),
      'X-GitHub-Hook-ID': '292430182',
      'X-Hub-Signature-256': `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`,
    },
    body,
  });
}
