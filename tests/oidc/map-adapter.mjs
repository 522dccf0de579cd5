// Issue 17: an unbounded in-memory store for oidc-provider (OIDC_CONFIG `unboundedStore: true`).
//
// oidc-provider's development adapter (lib/adapters/memory_adapter.js) keeps everything in one
// LRU of 1,000 entries. A login leaves about six there (interactions, session, grant, code,
// access and refresh tokens), so past ~160 sessions it evicts live refresh tokens and a refresh
// fails with `invalid_grant` ("refresh token not found"): no benchmark of 1,000 sessions can run
// against it. This adapter has the same interface and the same behaviour (the stored payload
// object is returned as is; `consume` marks it; `revokeByGrantId` drops every token of a grant)
// on a plain Map with no size bound. Entries expire after their `expiresIn` seconds: a lookup
// of an expired entry finds nothing, and expired entries are swept now and then. The provider
// lives at most MAX_LIFETIME_SECONDS, which bounds what it can hold.
//
// The interface (oidc-provider 8, example/my_adapter.js): one instance per model name, with
// upsert(id, payload, expiresIn), find(id), findByUid(uid) (Session), findByUserCode(userCode)
// (DeviceCode), consume(id), destroy(id) and revokeByGrantId(grantId).

// key -> {value, expiresAt (ms since the epoch, Infinity without an expiry)}
const storage = new Map();

// Models whose entities belong to a grant (revokeByGrantId), as in the development adapter.
const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
]);

// Every this many writes, expired entries are dropped.
const SWEEP_EVERY = 1000;
let writes = 0;

function sweep(now) {
  for (const [key, entry] of storage) {
    if (entry.expiresAt <= now) storage.delete(key);
  }
}

function get(key) {
  const entry = storage.get(key);
  if (entry === undefined) return undefined;
  if (entry.expiresAt <= Date.now()) {
    storage.delete(key);
    return undefined;
  }
  return entry.value;
}

function set(key, value, expiresIn) {
  const now = Date.now();
  writes += 1;
  if (writes % SWEEP_EVERY === 0) sweep(now);
  const expiresAt = Number.isFinite(expiresIn) && expiresIn > 0 ? now + expiresIn * 1000 : Infinity;
  storage.set(key, { value, expiresAt });
}

export default class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    if (this.model === 'Session') set(`sessionUid:${payload.uid}`, id, expiresIn);
    const { grantId, userCode } = payload;
    if (GRANTABLE.has(this.model) && grantId) {
      // The grant's list of token keys lives as long as the longest of them.
      const grantKey = `grant:${grantId}`;
      const entry = storage.get(grantKey);
      const expiresAt = Number.isFinite(expiresIn) && expiresIn > 0 ? Date.now() + expiresIn * 1000 : Infinity;
      if (entry === undefined || entry.expiresAt <= Date.now()) {
        storage.set(grantKey, { value: [key], expiresAt });
      } else {
        entry.value.push(key);
        entry.expiresAt = Math.max(entry.expiresAt, expiresAt);
      }
    }
    if (userCode) set(`userCode:${userCode}`, id, expiresIn);
    set(key, payload, expiresIn);
  }

  async find(id) {
    return get(this.key(id));
  }

  async findByUid(uid) {
    const id = get(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = get(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = get(this.key(id));
    if (payload !== undefined) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    storage.delete(this.key(id));
  }

  // eslint-disable-next-line class-methods-use-this
  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    const entry = storage.get(grantKey);
    if (entry !== undefined) {
      for (const key of entry.value) storage.delete(key);
      storage.delete(grantKey);
    }
  }
}
