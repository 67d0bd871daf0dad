// A real authorization server for the tests: panva/oidc-provider with its development
// login and consent pages, PKCE (S256) required, refresh tokens rotated on every use,
// token revocation, and PagerDuty-style scopes granted on a resource server.
// Usage: node server.mjs <port> <redirect_uri> <client_id> <client_secret> [access_ttl_seconds]
import Provider from 'oidc-provider';

const [port, redirectUri, clientId, clientSecret, accessTtl = '3600'] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const resource = 'https://api.pagerduty.test';
const scopes = [
  'read', 'write', 'incidents.read', 'incidents.write', 'services.read', 'services.write',
  'users.read', 'webhook_subscriptions.read', 'webhook_subscriptions.write',
];

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  pkce: { required: () => true, methods: ['S256'] },
  scopes: ['openid', 'offline_access', ...scopes],
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: scopes.join(' '),
        accessTokenFormat: 'opaque',
        accessTokenTTL: Number(accessTtl),
      }),
    },
  },
  issueRefreshToken: async () => true,
  rotateRefreshToken: true,
  ttl: { RefreshToken: 86400, Grant: 86400, Session: 3600, Interaction: 600, AuthorizationCode: 60 },
});
provider.proxy = false;
provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
