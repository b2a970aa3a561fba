// Types of the thin client in index.js. The schema types are generated from openapi.yaml (schema.d.ts).
import type { Client } from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type { components, paths };
type S = components["schemas"];
export type CheckRequest = S["CheckRequest"];
export type Decision = S["Decision"];
export type ChecksResponse = S["ChecksResponse"];
export type Policy = S["Policy"];
export type PolicySpec = S["PolicySpec"];
export type Problem = S["Problem"];
export type FieldError = S["FieldError"];
export type AcquireRequest = S["AcquireRequest"];
export type HoldDecision = S["HoldDecision"];
export type HoldState = S["HoldState"];
export type Hold = S["Hold"];

export type ProblemKind =
  | "validation"
  | "malformed"
  | "unauthenticated"
  | "forbidden"
  | "not-found"
  | "hold-not-found"
  | "conflict"
  | "hold-conflict"
  | "hold-expired"
  | "body-too-large"
  | "unsupported-media-type"
  | "rate-limited"
  | "internal"
  | "store-unavailable"
  | "not-ready"
  | "method-not-allowed";

export declare const ProblemTypes: Readonly<Record<ProblemKind, string>>;

export declare class SluiceProblemError extends Error {
  constructor(problem: Problem, response: Response);
  readonly problem: Problem;
  /** The problem type URI, e.g. https://sluice.dev/problems/validation. */
  readonly type: string;
  /** The last segment of the type, e.g. "validation"; the type itself when it is not sluice's. */
  readonly kind: ProblemKind | string;
  readonly status: number;
  readonly title: string;
  readonly detail?: string;
  /** One entry per invalid field (400 validation). */
  readonly errors: FieldError[];
  /** Retry-After in seconds, when the response had one (503). */
  readonly retryAfter?: number;
  readonly response: Response;
}

/** withHold's hold was denied: nothing was recorded and the function did not run. */
export declare class HoldDeniedError extends Error {
  constructor(decision: HoldDecision, response: Response);
  readonly decision: HoldDecision;
  /** The decision's retry_after_ms. */
  readonly retryAfterMs: number;
  /** Retry-After in whole seconds. */
  readonly retryAfter: number;
  readonly response: Response;
}

export interface WithHoldParams extends AcquireRequest {
  /** Aborting it while the function runs releases the hold (once the function returns or throws). */
  signal?: AbortSignal;
  /** Bounds the settle or release that ends the hold (default 5000 ms); it never uses signal. */
  cleanupTimeoutMs?: number;
}

export interface SluiceClientOptions {
  /** e.g. http://127.0.0.1:8080 */
  baseUrl: string;
  /** A bearer token with role check (check, checks, authorize, getKey) or admin (everything). */
  token?: string;
  fetch?: (input: Request) => Promise<Response>;
  headers?: Record<string, string>;
}

export type AuthorizeResult =
  | { allowed: true; rateLimit?: string; rateLimitPolicy?: string }
  | { allowed: false; retryAfter: number; rateLimit?: string; rateLimitPolicy?: string; problem: SluiceProblemError };

export interface SluiceClient {
  /** The openapi-fetch client, for anything the wrapper does not cover. */
  readonly raw: Client<paths>;
  /** POST /v1/check: the decision, admitted or not (a denial is not an error). */
  check(req: CheckRequest): Promise<Decision>;
  /** POST /v1/checks: with atomic, nothing is recorded unless every check is admitted. */
  checks(checks: CheckRequest[], options?: { atomic?: boolean }): Promise<ChecksResponse>;
  /** GET /v1/authorize: 204 → allowed; 429 → not allowed with retryAfter seconds. Other answers throw. */
  authorize(req: CheckRequest): Promise<AuthorizeResult>;
  /** GET /v1/policies/{name}/keys/{key}: the state a cost-1 check would see; consumes nothing. */
  getKey(policy: string, key: string): Promise<Decision>;
  /** DELETE /v1/policies/{name}/keys/{key} (admin). */
  resetKey(policy: string, key: string): Promise<void>;
  listPolicies(): Promise<Policy[]>;
  getPolicy(name: string): Promise<Policy>;
  /** PUT /v1/policies/{name} (admin): created is true for 201, false when replaced (200). */
  putPolicy(name: string, spec: PolicySpec): Promise<{ policy: Policy; created: boolean }>;
  deletePolicy(name: string): Promise<void>;
  /**
   * POST /v1/holds: the decision (a denial is not an error, as for check), with the hold when admitted, and
   * retryAfter (Retry-After, seconds) when denied.
   */
  acquireHold(req: AcquireRequest, options?: { signal?: AbortSignal }): Promise<HoldDecision & { retryAfter?: number; response: Response }>;
  /** POST /v1/holds/{id}/settle: the hold charges amount (0 releases it). */
  settleHold(id: string, amount: number, options?: { signal?: AbortSignal }): Promise<HoldState>;
  /** POST /v1/holds/{id}/renew: the deadline moves to now + ttl (default and maximum: the policy's window). */
  renewHold(id: string, ttl?: string, options?: { signal?: AbortSignal }): Promise<HoldState>;
  /** DELETE /v1/holds/{id}: release (settle 0). */
  releaseHold(id: string, options?: { signal?: AbortSignal }): Promise<HoldState>;
  /**
   * Acquires a hold, runs fn, and ends the hold: settled with what fn returns (undefined: the amount held) when fn
   * resolves and signal is not aborted; released when fn throws or signal was aborted (then it rethrows fn's error
   * or signal.reason). A denial throws HoldDeniedError without running fn. Resolves to the settle's answer, or
   * undefined when the acquire recorded nothing (no expires_at: shadow mode, or failure_mode allow on a store
   * failure) and so nothing was settled.
   */
  withHold(params: WithHoldParams, fn: (hold: Hold, signal?: AbortSignal) => Promise<number | void> | number | void): Promise<HoldState | undefined>;
}

export declare function createSluiceClient(options: SluiceClientOptions): SluiceClient;
