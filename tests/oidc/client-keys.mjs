// Prints a fresh client key pair for private_key_jwt client authentication (RFC 7523) as ONE
// line of JSON on stdout:
//
//   {"private_key_pem":"-----BEGIN PRIVATE KEY-----\n...PKCS#8...","public_jwk":{"kty":"EC",
//    "crv":"P-256","x":"..","y":"..","kid":"client-es256-<hex>","alg":"ES256","use":"sig"},
//    "kid":"client-es256-<hex>","alg":"ES256"}
//
// Usage: node tests/oidc/client-keys.mjs [ES256|RS256]     (default ES256; RS256 = 2048-bit RSA)
//
// Register `public_jwk` with the provider as the client's `jwks: {"keys": [<public_jwk>]}`
// (see README.md "Client authentication methods") and sign client assertions with
// `private_key_pem` using `alg`, with `kid` in the JWS header.

import * as crypto from 'node:crypto';

const alg = process.argv[2] === undefined ? 'ES256' : process.argv[2];
if (process.argv.length > 3 || !['ES256', 'RS256'].includes(alg)) {
  process.stderr.write('usage: node client-keys.mjs [ES256|RS256]\n');
  process.exit(2);
}

const { privateKey, publicKey } = alg === 'ES256'
  ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
  : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });

const kid = `client-${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`;
const out = {
  private_key_pem: privateKey.export({ format: 'pem', type: 'pkcs8' }),
  public_jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' },
  kid,
  alg,
};
process.stdout.write(`${JSON.stringify(out)}\n`);
