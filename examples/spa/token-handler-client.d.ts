// TypeScript declarations for token-handler-client.js.

/** When the session ends, in Unix seconds (GET <base>/session, POST <base>/login/end). */
export interface SessionInfo {
  isLoggedIn: boolean;
  /** The earlier of the two ends below. */
  expiresAt?: number;
  idleExpiresAt?: number;
  absoluteExpiresAt?: number;
}

/** The answer of POST <base>/login/end. */
export interface PageLoad extends SessionInfo {
  /** true when this page load completed a login (the URL was the provider's redirect). */
  handled: boolean;
  /** The CSRF value of the session, when signed in (the client keeps it for you). */
  csrf?: string;
}

export interface SessionWarning extends SessionInfo {
  /** Seconds until the session ends. */
  secondsLeft: number;
}

export interface ClientOptions {
  /** token-handler's base path (server.base_path). Default "/oauth-agent". */
  base?: string;
  /** The CSRF header, x-<cookies.prefix>-csrf. Default "x-th-csrf". */
  csrfHeader?: string;
  /** How long before the session ends onSessionWarning is called. Default 120. */
  warnBeforeSeconds?: number;
  /** The BroadcastChannel that keeps tabs in step; null: none. Default "token-handler". */
  channel?: string | null;
  /** Where this tab keeps its CSRF value. Default sessionStorage. */
  storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>;
  /** The fetch to use. Default globalThis.fetch. */
  fetch?: typeof fetch;
  /**
   * The session is over (401 session_expired): show the sign-in page. Called once. With
   * `provider`, only that provider's session ended (several providers in one browser): the
   * others go on, and the app may offer to sign in with that provider again.
   */
  onSessionExpired?: (detail: { code: string; message?: string; provider?: string }) => void;
  /** The session ends in `secondsLeft` seconds unless the user does something. */
  onSessionWarning?: (warning: SessionWarning) => void;
  /** Another tab signed in; this tab now has a session too. */
  onSignedIn?: (end: PageLoad & { fromOtherTab: true }) => void;
  /** Another tab signed out. */
  onSignedOut?: (detail: { fromOtherTab: true }) => void;
}

/** An error answer of token-handler: its stable code (docs/openapi.yaml) and message. */
export class TokenHandlerError extends Error {
  readonly status: number;
  readonly code: string;
  readonly body: unknown;
}

export interface TokenHandlerClient {
  /** Starts a login (POST <base>/login/start) and navigates to the provider. */
  login(body?: { provider?: string; extraParams?: { key: string; value: string }[] }): Promise<void>;
  /** Call on every page load: finishes a login, cleans ?code&state from the URL. */
  handlePageLoad(pageUrl?: string): Promise<PageLoad>;
  /** fetch with cookies and the CSRF header; refreshes once on 401 token_expired and retries. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** GET <base>/session (does not count as activity); schedules the expiry warning. */
  session(): Promise<SessionInfo>;
  /**
   * Signs out in every tab; navigates to the provider's logout page unless redirect is false.
   * With `provider`, ends only that provider's session.
   */
  logout(options?: { redirect?: boolean; provider?: string }): Promise<string | null>;
  /** This tab's CSRF value, or null. */
  csrf(): string | null;
  /** Stops the timers and the cross-tab channel. */
  close(): void;
}

export function createClient(options?: ClientOptions): TokenHandlerClient;
