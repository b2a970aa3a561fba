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
      "conflict",
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
  };
}
