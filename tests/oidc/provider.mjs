// A real OpenID provider for the end-to-end tests: npm's oidc-provider, issuing JWT access
// tokens by the client-credentials grant with the claims the request names (as a CI system
// would put a job's repository and owner in its token), and, given a console's redirect URI,
// signing people in to the console by the authorization code flow (its own development
// login pages: any name logs in, with the groups GROUPS gives it).
//
// usage: node provider.mjs PORT KEY_FILE [CONSOLE_REDIRECT_URI]
// Writes its RSA signing key (PKCS#8 PEM) to KEY_FILE, so tests can also sign tokens no
// well-behaved provider would issue (expired, not yet valid, huge), then prints
// "oidc provider listening on <issuer>". GET /jwks-fetches says how often its keys were read,
// GET /fetches how often its keys, discovery document and token endpoint were asked;
// GET /slow-jwks?seconds=N makes later key fetches wait N seconds (an issuer in trouble);
// GET /forget?account=NAME makes the provider forget a person (they left the company).
import Provider from 'oidc-provider';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';

const [port, keyFile, consoleRedirect] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
writeFileSync(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }));
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'provider-key-1', alg: 'RS256', use: 'sig' };
// Claims a token request may ask for, as form fields.
const CLAIMS = ['repository', 'repository_owner', 'ref'];
// The people of the directory behind the provider, and their groups.
const GROUPS = { carol: ['admins'], dana: ['engineering'] };
const forgotten = new Set();

const consoleClient = consoleRedirect ? [{
  client_id: 'console',
  client_secret: 'console-secret',
  grant_types: ['authorization_code', 'refresh_token'],
  redirect_uris: [consoleRedirect],
  response_types: ['code'],
}] : [];

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'ci',
    client_secret: 'ci-secret',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
  }, ...consoleClient],
  findAccount: async (ctx, id) => (forgotten.has(id) ? undefined : {
    accountId: id,
    claims: async () => ({
      sub: id, preferred_username: id, email: `${id}@example.test`, groups: GROUPS[id] ?? [],
    }),
  }),
  claims: { openid: ['sub'], profile: ['preferred_username'], email: ['email'], groups: ['groups'] },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  // The ID token carries the claims the scopes ask for (not only the userinfo endpoint).
  conformIdTokenClaims: false,
  jwks: { keys: [jwk] },
  ttl: { ClientCredentials: 600 },
  features: {
    devInteractions: { enabled: Boolean(consoleRedirect) },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:registry',
      getResourceServerInfo: (ctx) => ({
        scope: '',
        audience: ctx.oidc.body?.audience || 'registry.test',
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
      useGrantedResource: () => true,
    },
  },
  extraTokenClaims: (ctx) => {
    const claims = {};
    for (const name of CLAIMS) {
      if (ctx.oidc.body?.[name]) claims[name] = ctx.oidc.body[name];
    }
    // As a Kubernetes service account token carries them.
    if (ctx.oidc.body?.namespace) {
      claims['kubernetes.io'] = {
        namespace: ctx.oidc.body.namespace,
        serviceaccount: { name: ctx.oidc.body.serviceaccount },
      };
    }
    return claims;
  },
});

let jwksFetches = 0;
let discoveryFetches = 0;
let tokenRequests = 0;
let jwksDelay = 0;
provider.use(async (ctx, next) => {
  if (ctx.path === '/jwks-fetches') {
    ctx.body = { count: jwksFetches };
    return;
  }
  if (ctx.path === '/fetches') {
    ctx.body = { jwks: jwksFetches, discovery: discoveryFetches, token: tokenRequests };
    return;
  }
  if (ctx.path === '/slow-jwks') {
    jwksDelay = Number(ctx.query.seconds) * 1000;
    ctx.body = { delay: jwksDelay };
    return;
  }
  if (ctx.path === '/.well-known/openid-configuration') discoveryFetches += 1;
  if (ctx.path === '/token') tokenRequests += 1;
  if (ctx.path === '/jwks' && jwksDelay > 0) {
    await new Promise((resolve) => setTimeout(resolve, jwksDelay));
  }
  if (ctx.path === '/forget') {
    forgotten.add(ctx.query.account);
    ctx.body = { forgotten: [...forgotten] };
    return;
  }
  if (ctx.path === '/jwks') jwksFetches += 1;
  await next();
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc provider listening on ${issuer}`);
});
