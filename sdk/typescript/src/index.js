// A thin client for sluice over openapi-fetch: one method per operation, problems thrown as SluiceProblemError.
// Types come from src/schema.d.ts (generated from openapi.yaml by `npm run generate`) via src/index.d.ts.
import createClient from "openapi-fetch";

/** @typedef {import("./schema.js").components["schemas"]["Problem"]} Problem */

/** The stable problem type URIs of openapi.yaml, by kind. */
export const ProblemTypes = Object.freeze(
  Object.fromEntries(
    [
      "validation",
      "malformed",
      "unauthenticated",
      "forbidden",
      "not-found",
      "hold-not-found",
      "conflict",
      "hold-conflict",
      "hold-expired",
      "body-too-large",
      "unsupported-media-type",
      "rate-limited",
      "internal",
      "store-unavailable",
      "not-ready",
      "method-not-allowed",
    ].map((kind) => [kind, `https://sluice.dev/problems/${kind}`]),
  ),
);

const problemBase = "https://sluice.dev/problems/";

/** An RFC 9457 problem answered by sluice (or a non-problem error response, typed as `about:blank`). */
export class SluiceProblemError extends Error {
  /**
   * @param {Problem} problem
   * @param {Response} response
   */
  constructor(problem, response) {
    super(`${problem.status} ${problem.title}${problem.detail ? `: ${problem.detail}` : ""}`);
    this.name = "SluiceProblemError";
    this.problem = problem;
    this.type = problem.type;
    this.kind = problem.type.startsWith(problemBase) ? problem.type.slice(problemBase.length) : problem.type;
    this.status = problem.status;
    this.title = problem.title;
    this.detail = problem.detail;
    this.errors = problem.errors ?? [];
    this.retryAfter = retryAfterSeconds(response);
    this.response = response;
  }
}

/** A hold was denied: nothing was recorded and withHold's function did not run. */
export class HoldDeniedError extends Error {
  /**
   * @param {import("./schema.js").components["schemas"]["HoldDecision"]} decision
   * @param {Response} response
   */
  constructor(decision, response) {
    super(`hold denied by policy ${decision.policy} on key ${JSON.stringify(decision.key)}; retry after ${decision.retry_after_ms} ms`);
    this.name = "HoldDeniedError";
    this.decision = decision;
    this.retryAfterMs = decision.retry_after_ms;
    this.retryAfter = retryAfterSeconds(response) ?? Math.ceil(decision.retry_after_ms / 1000);
    this.response = response;
  }
}

/** @param {Response} response */
function retryAfterSeconds(response) {
  const v = response.headers.get("Retry-After");
  return v === null || !/^\d+$/.test(v) ? undefined : Number(v);
}

/**
 * @param {unknown} error the parsed error body
 * @param {Response} response
 */
function toError(error, response) {
  const p = /** @type {any} */ (error);
  if (p && typeof p === "object" && typeof p.type === "string" && typeof p.status === "number") {
    return new SluiceProblemError(p, response);
  }
  return new SluiceProblemError(
    { type: "about:blank", title: response.statusText || "HTTP error", status: response.status, detail: typeof error === "string" ? error.slice(0, 200) : undefined },
    response,
  );
}

/**
 * @template T
 * @param {Promise<{ data?: T, error?: unknown, response: Response }>} call
 * @returns {Promise<{ data: T, response: Response }>}
 */
async function ok(call) {
  const { data, error, response } = await call;
  if (!response.ok) throw toError(error, response);
  return { data: /** @type {T} */ (data), response };
}

/**
 * Whether key is a whole dot segment, which WHATWG URL parsing removes from a path.
 * @param {string} key
 */
function isDotSegment(key) {
  return key === "." || key === "..";
}

/**
 * Creates a sluice client.
 * @param {import("./index.js").SluiceClientOptions} options
 * @returns {import("./index.js").SluiceClient}
 */
export function createSluiceClient({ baseUrl, token, fetch, headers }) {
  /** @type {Record<string, string>} */
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  /** @type {import("openapi-fetch").Client<import("./schema.js").paths>} */
  const api = createClient({ baseUrl, headers: h, ...(fetch ? { fetch } : {}) });
  return {
    raw: api,
    async check(req) {
      return (await ok(api.POST("/v1/check", { body: req }))).data;
    },
    async checks(checks, { atomic = false } = {}) {
      return (await ok(api.POST("/v1/checks", { body: { checks, atomic } }))).data;
    },
    async authorize({ policy, key, cost }) {
      const { error, response } = await api.GET("/v1/authorize", { params: { query: { policy, key, cost } } });
      const rateLimit = response.headers.get("RateLimit") ?? undefined;
      const rateLimitPolicy = response.headers.get("RateLimit-Policy") ?? undefined;
      if (response.status === 204) return { allowed: true, rateLimit, rateLimitPolicy };
      const problem = toError(error, response);
      if (response.status === 429) return { allowed: false, retryAfter: problem.retryAfter ?? 1, rateLimit, rateLimitPolicy, problem };
      throw problem;
    },
    // The keys "." and ".." travel in the query string: as path segments, fetch's URL parser would drop them
    // (even percent-encoded as %2E) and the request would reach another endpoint.
    async getKey(policy, key) {
      if (isDotSegment(key)) {
        return (await ok(api.GET("/v1/policies/{name}/keys", { params: { path: { name: policy }, query: { key } } }))).data;
      }
      return (await ok(api.GET("/v1/policies/{name}/keys/{key}", { params: { path: { name: policy, key } } }))).data;
    },
    async resetKey(policy, key) {
      if (isDotSegment(key)) {
        await ok(api.DELETE("/v1/policies/{name}/keys", { params: { path: { name: policy }, query: { key } } }));
        return;
      }
      await ok(api.DELETE("/v1/policies/{name}/keys/{key}", { params: { path: { name: policy, key } } }));
    },
    async listPolicies() {
      return (await ok(api.GET("/v1/policies"))).data.policies;
    },
    async getPolicy(name) {
      return (await ok(api.GET("/v1/policies/{name}", { params: { path: { name } } }))).data;
    },
    async putPolicy(name, spec) {
      const { data, response } = await ok(api.PUT("/v1/policies/{name}", { params: { path: { name } }, body: spec }));
      return { policy: data, created: response.status === 201 };
    },
    async deletePolicy(name) {
      await ok(api.DELETE("/v1/policies/{name}", { params: { path: { name } } }));
    },
    async acquireHold(req, { signal } = {}) {
      const { data, response } = await ok(api.POST("/v1/holds", { body: req, signal }));
      return { ...data, retryAfter: data.allowed ? undefined : (retryAfterSeconds(response) ?? 1), response };
    },
    async settleHold(id, amount, { signal } = {}) {
      return (await ok(api.POST("/v1/holds/{id}/settle", { params: { path: { id } }, body: { amount }, signal }))).data;
    },
    async renewHold(id, ttl, { signal } = {}) {
      return (await ok(api.POST("/v1/holds/{id}/renew", { params: { path: { id } }, body: ttl === undefined ? {} : { ttl }, signal }))).data;
    },
    async releaseHold(id, { signal } = {}) {
      return (await ok(api.DELETE("/v1/holds/{id}", { params: { path: { id } }, signal }))).data;
    },
    // withHold: acquire, run fn, then settle with what fn returns, or release on every other path. The settle
    // and the release never use the caller's signal (it may be aborted already): they get their own timeout.
    async withHold({ signal, cleanupTimeoutMs = 5000, ...req }, fn) {
      signal?.throwIfAborted();
      const { data: d, response } = await ok(api.POST("/v1/holds", { body: req, signal }));
      if (!d.allowed) throw new HoldDeniedError(d, response);
      const hold = /** @type {NonNullable<typeof d.hold>} */ (d.hold);
      if (hold.expires_at === undefined) {
        // Nothing was recorded (shadow mode would have denied, or failure_mode allow admitted a store failure):
        // there is nothing to settle or release.
        await fn(hold, signal);
        return undefined;
      }
      const cleanup = () => ({ signal: AbortSignal.timeout(cleanupTimeoutMs) });
      let actual;
      try {
        actual = await fn(hold, signal);
        signal?.throwIfAborted();
      } catch (e) {
        try {
          await ok(api.DELETE("/v1/holds/{id}", { params: { path: { id: hold.id } }, ...cleanup() }));
        } catch (releaseError) {
          throw new AggregateError([e, releaseError], `${e instanceof Error ? e.message : e}; and the release failed: ${releaseError instanceof Error ? releaseError.message : releaseError}`, { cause: e });
        }
        throw e;
      }
      const amount = actual ?? hold.amount;
      return (await ok(api.POST("/v1/holds/{id}/settle", { params: { path: { id: hold.id } }, body: { amount }, ...cleanup() }))).data;
    },
  };
}
