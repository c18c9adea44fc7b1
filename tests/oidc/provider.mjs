// The OpenID provider wgpy's tests run: oidc-provider (OpenID Certified, pinned in
// package.json) on loopback, plain HTTP, configured from a JSON file the test writes.
//
//   node provider.mjs CONFIG.json
//
// CONFIG: {"host": "127.0.0.1", "port": 0,
//          "clients": [{"client_id": ..., "client_secret": ..., "redirect_uris": [...]}],
//          "users": {"alice": {"email": ..., "email_verified": true, "groups": [...], ...}},
//          "id_token_ttl": 3600, "issuer": optional, default http://HOST:PORT}
// Prints one line of JSON on stdout when it serves ({"issuer": ..., "port": ...}), logs to
// stderr, and exits on SIGTERM or SIGINT. The login and consent pages are oidc-provider's
// dev interactions: the login form takes any username (the password is ignored); a username
// not in "users" signs in with no claims but "sub", as an account without an email would.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const host = config.host ?? '127.0.0.1';
const users = config.users ?? {};

// A fresh signing key per run: a token from another run, or signed by anything else, fails.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: randomBytes(8).toString('hex') };

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port ?? 0, host, resolve);
});
const { port } = server.address();
// "issuer": another URL the provider is reached at (a proxy in front of it, tests/oidc/proxy.py).
const issuer = config.issuer ?? `http://${host}:${port}`;

const provider = new Provider(issuer, {
  clients: config.clients.map((client) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  })),
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  // Every client must use PKCE (by default only public clients must).
  pkce: { required: () => true },
  // Put the scopes' claims (email, groups) in the ID token itself, not only in userinfo.
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  ttl: { IdToken: config.id_token_ttl ?? 3600 },
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { ...(users[sub] ?? {}), sub };
      },
    };
  },
});

server.on('request', provider.callback());
provider.on('server_error', (_ctx, error) => console.error(`server_error: ${error.stack}`));

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
